//! The one operation type of every nftables transaction, and the one encoder.
//!
//! Every feature's planner returns [`Op`]s: a table, a chain, a set, a rule or an element,
//! added or deleted. They are plain values (a rule holds its expressions, unencoded), so the
//! planners stay pure and are unit-tested without root; [`Op::nft`] prints one as the `nft`
//! command that does the same. [`encode`] turns a list into one nftnl batch; [`super::apply`]
//! sends it and names the operation the kernel rejected.

use std::fmt;

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
    /// how nft prints type, hook and priority (`nat hook postrouting priority srcnat`)
    pub text: &'static str,
}

/// A rule body: its expressions in order, and the same body as nft prints it.
pub(crate) struct Body {
    /// `ip saddr @masq4 masquerade`
    pub text: String,
    /// the expressions, encoded only by [`encode`]
    pub exprs: Vec<Box<dyn Expression>>,
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// One message of a transaction in our table of the batch's family.
#[derive(Debug)]
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
        /// the rule body
        rule: Body,
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
        /// key (and `: data`) as nft prints them
        text: String,
    },
    /// delete an element by key
    DelElem {
        /// set name
        set: &'static str,
        /// key bytes
        key: Vec<u8>,
        /// key as nft prints it
        text: String,
    },
}

impl Op {
    /// The op as the `nft` command doing the same in our table of `family` (for errors, logs
    /// and the planners' unit tests).
    pub(crate) fn nft(&self, family: ProtoFamily) -> impl fmt::Display + '_ {
        Nft(family, self)
    }
}

struct Nft<'a>(ProtoFamily, &'a Op);

impl fmt::Display for Nft<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = format!(
            "{} {TABLE}",
            super::netlink::family_kw(self.0 as u32).unwrap_or("?")
        );
        match self.1 {
            Op::AddTable => write!(f, "add table {t}"),
            Op::AddChain { name, base: None } => write!(f, "add chain {t} {name}"),
            Op::AddChain {
                name,
                base: Some(b),
            } => write!(
                f,
                "add chain {t} {name} {{ type {}; policy accept; }}",
                b.text
            ),
            Op::FlushChain(name) => write!(f, "flush chain {t} {name}"),
            Op::AddSet(def) => write!(
                f,
                "add {} {t} {} {{ type {}; }}",
                if def.data.is_some() { "map" } else { "set" },
                def.name,
                def.text
            ),
            Op::AddRule {
                chain,
                rule,
                comment,
                after,
            } => {
                let pos = after.map(|h| format!("position {h} ")).unwrap_or_default();
                write!(
                    f,
                    "add rule {t} {chain} {pos}{} comment \"{comment}\"",
                    rule.text
                )
            }
            Op::DelRule { chain, handle } => write!(f, "delete rule {t} {chain} handle {handle}"),
            Op::AddElem {
                set, comment, text, ..
            } => write!(
                f,
                "add element {t} {set} {{ {text} comment \"{comment}\" }}"
            ),
            Op::DelElem { set, text, .. } => write!(f, "delete element {t} {set} {{ {text} }}"),
        }
    }
}

/// Adds the element `key` (an address) with its owner comment to an address set.
pub(crate) fn add_addr(set: &'static str, key: std::net::IpAddr, comment: &str) -> Op {
    Op::AddElem {
        set,
        key: addr_bytes(key),
        data: Vec::new(),
        comment: comment.to_string(),
        text: key.to_string(),
    }
}

/// Deletes the element `key` (an address) from an address set.
pub(crate) fn del_addr(set: &'static str, key: std::net::IpAddr) -> Op {
    Op::DelElem {
        set,
        key: addr_bytes(key),
        text: key.to_string(),
    }
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
                rule: body,
                comment,
                after,
            } => {
                let cname = cstring("chain name", chain)?;
                let ch = Chain::new(&cname, &table);
                let mut rule = Rule::new(&ch);
                for e in &body.exprs {
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
                ..
            } => batch.add(
                &SetMsg::elem(family, set, key, data, Some(comment))?,
                MsgType::Add,
            ),
            Op::DelElem { set, key, .. } => {
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
        text: match fam {
            crate::Family::V4 => "ipv4_addr",
            crate::Family::V6 => "ipv6_addr",
        },
    }
}
