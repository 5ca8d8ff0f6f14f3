//! The one operation type of every nftables transaction, and the one encoder.
//!
//! A feature plans with its own vocabulary (masquerade's `Op`, portmap's `PmOp`, …: pure
//! values that print as `nft` commands, unit-tested without root) and lowers each of its
//! operations to the [`Op`]s below: a table, a chain, a set, a rule or an element, added or
//! deleted. [`encode`] turns those into one nftnl batch; [`super::apply`] sends it and names the
//! feature operation the kernel rejected.

use nftnl::expr::Expression;
use nftnl::{Batch, Chain, ChainType, FinalizedBatch, Hook, MsgType, Policy, ProtoFamily, Rule};

use super::object::{cstring, set_rule_comment, SetDef, SetMsg};
use super::TABLE;
use crate::Error;

/// Hook, priority and type of a base chain (policy accept, always).
#[derive(Debug, Clone, Copy)]
pub(crate) struct BaseChain {
    /// netfilter hook
    pub hook: Hook,
    /// priority on the hook
    pub priority: i32,
    /// filter or nat
    pub kind: ChainType,
}

/// One message of a transaction in our table of the batch's family.
pub(crate) enum Op {
    /// create the table if absent
    AddTable,
    /// create a chain if absent (a base chain when `base` is set)
    AddChain {
        /// chain name
        name: &'static str,
        /// hook of a base chain; None for a regular chain
        base: Option<BaseChain>,
    },
    /// delete every rule of a chain
    FlushChain(&'static str),
    /// create a set or map if absent
    AddSet(SetDef<'static>),
    /// add a rule: appended, or right after the rule with handle `after`
    AddRule {
        /// chain name
        chain: &'static str,
        /// the rule's expressions, in order
        exprs: Vec<Box<dyn Expression>>,
        /// rule comment
        comment: String,
        /// insert after this handle instead of appending
        after: Option<u64>,
    },
    /// delete a rule by handle
    DelRule {
        /// chain name
        chain: &'static str,
        /// kernel handle
        handle: u64,
    },
    /// add an element (a key, data for a map, the owner comment)
    AddElem {
        /// set name
        set: &'static str,
        /// key bytes
        key: Vec<u8>,
        /// data bytes (maps only)
        data: Vec<u8>,
        /// element comment
        comment: String,
    },
    /// delete an element by key
    DelElem {
        /// set name
        set: &'static str,
        /// key bytes
        key: Vec<u8>,
    },
}

/// Lets a boxed expression through nftnl's `add_expr`, which takes a sized `impl Expression`.
struct Dyn<'a>(&'a dyn Expression);

impl Expression for Dyn<'_> {
    fn to_expr(&self, rule: &Rule) -> std::ptr::NonNull<nftnl::nftnl_sys::nftnl_expr> {
        self.0.to_expr(rule)
    }
}

/// Encodes `ops` in order into one transaction (batch begin … batch end) on our table of
/// `family`: one netlink message per op.
pub(crate) fn encode(family: ProtoFamily, ops: &[Op]) -> Result<FinalizedBatch, Error> {
    let tname = cstring("table name", TABLE)?;
    let table = nftnl::Table::new(&tname, family);
    let mut batch = Batch::new();
    for op in ops {
        match op {
            Op::AddTable => batch.add(&table, MsgType::Add),
            Op::AddChain { name, base } => {
                let cname = cstring("chain name", name)?;
                let mut chain = Chain::new(&cname, &table);
                if let Some(b) = base {
                    chain.set_hook(b.hook, b.priority);
                    chain.set_type(b.kind);
                    chain.set_policy(Policy::Accept);
                }
                batch.add(&chain, MsgType::Add);
            }
            Op::FlushChain(name) => {
                let cname = cstring("chain name", name)?;
                let chain = Chain::new(&cname, &table);
                // DELRULE naming only table and chain deletes every rule of the chain.
                batch.add(&Rule::new(&chain), MsgType::Del);
            }
            Op::AddSet(def) => batch.add(&SetMsg::define(def)?, MsgType::Add),
            Op::AddRule {
                chain,
                exprs,
                comment,
                after,
            } => {
                let cname = cstring("chain name", chain)?;
                let ch = Chain::new(&cname, &table);
                let mut rule = Rule::new(&ch);
                for e in exprs {
                    rule.add_expr(&Dyn(e.as_ref()));
                }
                set_rule_comment(&mut rule, comment)?;
                if let Some(h) = after {
                    rule.set_position(*h);
                }
                batch.add(&rule, MsgType::Add);
            }
            Op::DelRule { chain, handle } => {
                let cname = cstring("chain name", chain)?;
                let ch = Chain::new(&cname, &table);
                let mut rule = Rule::new(&ch);
                rule.set_handle(*handle);
                batch.add(&rule, MsgType::Del);
            }
            Op::AddElem {
                set,
                key,
                data,
                comment,
            } => batch.add(
                &SetMsg::elem(family, set, key, data, Some(comment))?,
                MsgType::Add,
            ),
            Op::DelElem { set, key } => {
                batch.add(&SetMsg::elem(family, set, key, &[], None)?, MsgType::Del)
            }
        }
    }
    Ok(batch.finalize())
}

/// The key bytes of an address (a set of `ipv4_addr` / `ipv6_addr`).
pub(crate) fn addr_bytes(ip: std::net::IpAddr) -> Vec<u8> {
    match ip {
        std::net::IpAddr::V4(a) => a.octets().to_vec(),
        std::net::IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// An address set of family `fam` (nft types `ipv4_addr` = 7, `ipv6_addr` = 8).
pub(crate) fn addr_set(
    family: ProtoFamily,
    name: &'static str,
    id: u32,
    fam: crate::Family,
) -> SetDef<'static> {
    let (key_type, key_len) = match fam {
        crate::Family::V4 => (7, 4),
        crate::Family::V6 => (8, 16),
    };
    SetDef {
        family,
        name,
        id,
        key_type,
        key_len,
        data: None,
        key_byteorder: None,
    }
}
