//! Shared nftables infrastructure: the only place that talks to libnftnl through raw pointers.
//!
//! * [`netlink`] — the transport (one `NETLINK_NETFILTER` socket per call, one `sendmsg` per
//!   transaction) and the reader: a chain's rules, a set's elements (by key or all), the base
//!   chains on a hook.
//! * [`object`] — what nftnl's safe wrappers lack: set definitions with any key/data type, element
//!   messages that carry a comment and are added without NLM_F_EXCL, generic expressions, and
//!   the element/rule parsers.
//!
//! * [`batch`] — the one operation type ([`batch::Op`]: table, chain, set, rule, element) and
//!   the one encoder.
//!
//! Each feature (crate::masquerade, crate::portmap, crate::forward, crate::macspoof) plans its
//! transaction as a list of [`batch::Op`]s without touching the kernel, building rule bodies
//! from the expressions of [`object`], and sends it with [`apply`], which names the operation
//! the kernel rejected. Everything of ours lives in table `inet rcni` (and `bridge rcni` for macspoofchk).

pub(crate) mod batch;
pub(crate) mod netlink;
pub(crate) mod object;

use std::net::IpAddr;

use nftnl::ProtoFamily;

use crate::names::tag_of_comment;
use crate::{Error, Family};
use netlink::Nl;

/// Name of our tables (`inet rcni`, `bridge rcni`).
pub const TABLE: &str = "rcni";

/// An element of one of our address sets (masquerade, forward) as stored in the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elem {
    /// container address (the key)
    pub key: IpAddr,
    /// owner comment (`<owner tag> net: …, id: …, if: …`)
    pub comment: String,
}

impl Elem {
    /// An element read back from an address set (None: not an address key).
    pub fn from_raw(key: &[u8], comment: String) -> Option<Elem> {
        let key = match key.len() {
            4 => IpAddr::from(<[u8; 4]>::try_from(key).ok()?),
            16 => IpAddr::from(<[u8; 16]>::try_from(key).ok()?),
            _ => return None,
        };
        Some(Elem { key, comment })
    }

    /// Which set it lives in.
    pub fn fam(&self) -> Family {
        Family::of(self.key)
    }
    /// Owner tag at the start of the comment.
    pub fn tag(&self) -> &str {
        tag_of_comment(&self.comment)
    }
}

/// Elements of one of our `inet` address sets: the one with `key`, or every one.
pub(crate) fn addr_elems(nl: &mut Nl, set: &str, key: Option<IpAddr>) -> Result<Vec<Elem>, Error> {
    let k = key.map(batch::addr_bytes);
    Ok(nl
        .set_elems(ProtoFamily::Inet, set, k.as_deref())?
        .into_iter()
        .filter_map(|e| Elem::from_raw(&e.key, e.comment))
        .collect())
}

/// The element `key` of a feature's address set of its family (kernel keyed lookup, O(1));
/// None if absent or if the table/set does not exist yet.
pub(crate) fn addr_elem(
    nl: &mut Nl,
    set_of: fn(Family) -> &'static str,
    key: IpAddr,
) -> Result<Option<Elem>, Error> {
    Ok(addr_elems(nl, set_of(Family::of(key)), Some(key))?
        .into_iter()
        .next())
}

/// Every element of a feature's two address sets (`set_of` names the set of a family): what
/// DEL, GC and the listing read.
pub(crate) fn all_addr_elems(
    nl: &mut Nl,
    set_of: fn(Family) -> &'static str,
) -> Result<Vec<Elem>, Error> {
    let mut all = addr_elems(nl, set_of(Family::V4), None)?;
    all.extend(addr_elems(nl, set_of(Family::V6), None)?);
    Ok(all)
}

/// A keyed lookup answered for a pure planner: None on error, the first error kept in `err`
/// for the caller to return before applying anything.
pub(crate) fn keep_err<T>(err: &mut Option<Error>, r: Result<Option<T>, Error>) -> Option<T> {
    r.unwrap_or_else(|e| {
        err.get_or_insert(e);
        None
    })
}

/// A rule as read back: its kernel handle and its comment (the only parts our planners use).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleInfo {
    /// kernel handle (for delete / insert-after)
    pub handle: u64,
    /// rule comment
    pub comment: String,
}

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

/// A listing entry for an element of our set `set` in `family`, printed as `text` (the same
/// text the element's [`batch::Op`] prints), with its owner comment.
pub(crate) fn elem_entry(
    family: ProtoFamily,
    set: &str,
    text: String,
    comment: &str,
) -> crate::entry::Entry {
    let fam = netlink::family_kw(family as u32).unwrap_or("?");
    crate::entry::Entry {
        backend: "nftables",
        object: format!("{fam} {TABLE} set {set}"),
        entry: text,
        comment: comment.to_string(),
    }
}

/// Listing entries for the commented rules of `chains` of our table in `family`, read with
/// the same reader the features' planners use.
pub(crate) fn rule_entries(
    nl: &mut Nl,
    family: ProtoFamily,
    chains: &[&str],
) -> Result<Vec<crate::entry::Entry>, Error> {
    let fam = netlink::family_kw(family as u32).unwrap_or("?");
    let mut out = Vec::new();
    for chain in chains {
        for r in nl.chain_rules(family, chain)?.unwrap_or_default() {
            out.push(crate::entry::Entry {
                backend: "nftables",
                object: format!("{fam} {TABLE} chain {chain}"),
                entry: format!("rule handle {}", r.handle),
                comment: r.comment,
            });
        }
    }
    Ok(out)
}

/// Encodes `ops` as one transaction on our table of `family` and sends it. When the kernel
/// rejects a message, the error names the operation as `nft` would print it.
pub(crate) fn apply(
    nl: &mut Nl,
    family: ProtoFamily,
    ops: &[batch::Op],
    what: &str,
) -> Result<(), Error> {
    if ops.is_empty() {
        return Ok(());
    }
    let batch = batch::encode(family, ops)?;
    nl.transact_seq(&batch, what).map_err(|(err, seq)| {
        match failed_op(batch.sequence_numbers(), ops.len(), seq) {
            Some(i) => Error::Netlink {
                op: format!("{what}: {}", ops[i].nft(family)),
                source: match err {
                    Error::Netlink { source, .. } => source,
                    other => std::io::Error::other(other.to_string()),
                },
            },
            None => err,
        }
    })
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
