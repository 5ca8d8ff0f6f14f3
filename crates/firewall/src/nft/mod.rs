//! nftables backend (the default): everything lives in one table owned by the suite,
//! `inet rcni`, changed by exactly one netlink transaction per call, never by exec'ing `nft`.
//!
//! Layout (as `nft list table inet rcni` prints it):
//!
//! ```text
//! table inet rcni {
//!     set masq4 { type ipv4_addr
//!         elements = { 10.22.0.5 comment "<nethash>-<ownerhash> net: n1, id: c1, if: eth0" } }
//!     set masq6 { type ipv6_addr
//!         elements = { fd00:22::5 comment "<nethash>-<ownerhash> net: n1, id: c1, if: eth0" } }
//!     chain postrouting {
//!         type nat hook postrouting priority srcnat; policy accept;
//!         ip daddr 224.0.0.0/4 return comment "rcni: multicast4"
//!         ip6 daddr ff00::/8 return comment "rcni: multicast6"
//!         ip saddr 10.22.0.0/24 ip daddr 10.22.0.0/24 return comment "<nethash>:10.22.0.0/24 net: n1"
//!         ip6 saddr fd00:22::/64 ip6 daddr fd00:22::/64 return comment "<nethash>:fd00:22::/64 net: n1"
//!         ip saddr @masq4 masquerade comment "rcni: masquerade4"
//!         ip6 saddr @masq6 masquerade comment "rcni: masquerade6"
//!     }
//! }
//! ```
//!
//! This is the reference semantics (masquerade a container address unless the destination is
//! in its own subnet or multicast) with per-container state reduced to one set element:
//!
//! * `<nethash>` = 16 hex of sha512(network); `<ownerhash>` = 16 hex of
//!   sha512(container id, NUL, ifname). The element comment starts with that owner tag, so DEL
//!   (even with no netns and no prevResult, plugins#810) and GC find an attachment's addresses by
//!   dumping only our two sets.
//! * ADD reads the base chain (its size follows the number of subnets, not containers), looks
//!   each address up by key, and in the steady state sends a transaction holding only the new
//!   elements. The first ADD of a subnet inserts its exemption rule after the multicast returns.
//!   Table, sets and chain are created without NLM_F_EXCL, so racing plugin processes are safe.
//! * Two kernel costs are avoided on purpose, both measured while designing this: verdict-map
//!   jumps make every commit re-validate the table by walking all map elements (cost grows with
//!   containers), and deleting anything makes the closing of the netlink socket wait for an RCU
//!   grace period (~10 ms). ADD therefore uses plain sets and deletes nothing unless it takes
//!   over an address from a stale owner.
//! * DEL/GC delete the elements and, when a network has no address left in a subnet, that
//!   subnet's exemption rule.
//! * All read-modify-write runs under the flock on [`crate::LOCK_PATH`].

mod encode;
pub mod forward;
pub mod hostport;
pub mod macspoof;
pub(crate) mod netlink;
pub mod plan;

use std::path::PathBuf;

use crate::{lock, validate_owner, validate_rules, Error, Firewall, MasqRule, LOCK_PATH};
use netlink::Nl;
use plan::{
    has_subnet_rule, owned_by, plan_add, plan_remove, stale_in, Elem, Fam, Op, BASE_CHAIN, TABLE,
};

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
        let base = nl.dump_base_rules()?;
        let mut lookup_err = None;
        let ops = plan_add(rules, base.as_deref(), &mut |ip| match nl.get_elem(ip) {
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
        let base = nl.dump_base_rules()?.unwrap_or_default();
        let ops = plan_remove(
            network,
            &all,
            &base,
            &owned_by(network, container_id, ifname),
        );
        Self::apply(&mut nl, &ops, "delete masquerade")
    }

    fn check_masquerade(&self, rules: &[MasqRule]) -> Result<(), Error> {
        validate_rules(rules)?;
        if rules.is_empty() {
            return Ok(());
        }
        let _guard = lock::lock(&self.lock_path)?;
        let mut nl = Nl::open()?;
        let Some(base) = nl.dump_base_rules()? else {
            return Err(Error::Missing(format!(
                "chain inet {TABLE} {BASE_CHAIN} does not exist"
            )));
        };
        for fixed in [
            plan::FIXED_MCAST4,
            plan::FIXED_MCAST6,
            plan::FIXED_MASQ4,
            plan::FIXED_MASQ6,
        ] {
            if !base.iter().any(|r| r.comment == fixed) {
                return Err(Error::Missing(format!(
                    "rule \"{fixed}\" missing from chain inet {TABLE} {BASE_CHAIN}"
                )));
            }
        }
        for r in rules {
            let want = owned_by(&r.network, &r.container_id, &r.ifname);
            let set = Fam::of(r.ip()).set();
            match nl.get_elem(r.ip())? {
                None => {
                    return Err(Error::Missing(format!(
                        "element {} not in set inet {TABLE} {set} (network {:?}, container {:?}, ifname {:?})",
                        r.ip(),
                        r.network,
                        r.container_id,
                        r.ifname
                    )))
                }
                Some(e) if !want(&e) => {
                    return Err(Error::Missing(format!(
                        "element {} in set inet {TABLE} {set} belongs to \"{}\", expected container {:?} ifname {:?}",
                        r.ip(),
                        e.comment,
                        r.container_id,
                        r.ifname
                    )))
                }
                Some(_) => {}
            }
            if !has_subnet_rule(&base, &r.network, &r.subnet()) {
                return Err(Error::Missing(format!(
                    "no exemption rule for subnet {} of network {:?} in chain inet {TABLE} {BASE_CHAIN}",
                    r.subnet(),
                    r.network
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
        let base = nl.dump_base_rules()?.unwrap_or_default();
        let ops = plan_remove(network, &all, &base, &stale_in(network, keep));
        // Element deletions come first in the plan, rule deletions last, so chunks (which keep
        // each transaction well under the socket buffer) never remove a rule still needed.
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
