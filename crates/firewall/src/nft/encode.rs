//! Turns a plan into one nftnl batch. nftnl wraps tables, chains, rules, named sets and common
//! expressions; what it lacks is implemented here over nftnl-sys (DESIGN.md layer 3): a
//! `lookup` by set name, and set elements carrying a comment in their userdata, sent with
//! NLM_F_CREATE but not NLM_F_EXCL.

use std::ffi::{c_void, CString};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::raw::c_char;
use std::ptr;

use ipnet::IpNet;
use nftnl::expr::{
    Bitwise, Cmp, CmpOp, Expression, Ipv4HeaderField, Ipv6HeaderField, Masquerade, Meta,
    NetworkHeaderField, Payload, Verdict,
};
use nftnl::nftnl_sys as sys;
use nftnl::set::{Set, SetKey};
use nftnl::{
    Batch, Chain, ChainType, FinalizedBatch, Hook, MsgType, NlMsg, Policy, ProtoFamily, Rule, Table,
};

use super::netlink::RawSet;
use super::plan::{Fam, Op, RuleSpec, BASE_CHAIN, SRCNAT_PRIORITY, TABLE};
use crate::Error;

pub(crate) fn cstring(what: &'static str, s: &str) -> Result<CString, Error> {
    CString::new(s).map_err(|_| Error::Invalid {
        what,
        value: s.to_string(),
        reason: "contains NUL",
    })
}

/// Set ids tie a rule's lookup to a set created in the same transaction.
fn set_id(fam: Fam) -> u32 {
    match fam {
        Fam::V4 => 1,
        Fam::V6 => 2,
    }
}

/// `lookup` of register 1 in a named set (`… @set`), by name and transaction set id so it also
/// finds a set created earlier in the same batch.
pub struct SetLookup {
    set: CString,
    id: u32,
}

impl SetLookup {
    /// `lookup` of register 1 in set `set` (transaction set id `id`).
    pub(crate) fn new(set: CString, id: u32) -> SetLookup {
        SetLookup { set, id }
    }
}

impl Expression for SetLookup {
    fn to_expr(&self, _rule: &Rule) -> ptr::NonNull<sys::nftnl_expr> {
        // SAFETY: allocation result checked; the string is copied by libnftnl.
        unsafe {
            let expr = sys::nftnl_expr_alloc(c"lookup".as_ptr());
            let Some(expr) = ptr::NonNull::new(expr) else {
                std::process::abort();
            };
            let e = expr.as_ptr();
            sys::nftnl_expr_set_u32(
                e,
                sys::NFTNL_EXPR_LOOKUP_SREG as u16,
                libc::NFT_REG_1 as u32,
            );
            sys::nftnl_expr_set_str(e, sys::NFTNL_EXPR_LOOKUP_SET as u16, self.set.as_ptr());
            sys::nftnl_expr_set_u32(e, sys::NFTNL_EXPR_LOOKUP_SET_ID as u16, self.id);
            expr
        }
    }
}

/// NEWSETELEM / DELSETELEM carrying the elements of a [`RawSet`]. Unlike nftnl's own element
/// messages, adds use NLM_F_CREATE without NLM_F_EXCL, and neither asks for an ACK (errors are
/// still reported).
pub(crate) struct ElemMsg {
    pub(crate) set: RawSet,
    /// nfgenmsg family of the message (the set's table family).
    pub(crate) family: ProtoFamily,
}

// SAFETY: one element (key ≤16 bytes, chain name, ≤130 bytes of userdata) is far below
// nft_nlmsg_maxsize(), the room nftnl guarantees in `buf`.
unsafe impl NlMsg for ElemMsg {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, msg_type: MsgType) {
        let (ty, flags) = match msg_type {
            MsgType::Add => (libc::NFT_MSG_NEWSETELEM, libc::NLM_F_CREATE),
            MsgType::Del => (libc::NFT_MSG_DELSETELEM, 0),
        };
        // SAFETY: caller guarantees buf has room for a maximal message.
        unsafe {
            let nlh = sys::nftnl_nlmsg_build_hdr(
                buf.cast::<c_char>(),
                ty as u16,
                self.family as u16,
                flags as u16,
                seq,
            );
            sys::nftnl_set_elems_nlmsg_build_payload(nlh, self.set.ptr);
        }
    }
}

fn add_set<K: SetKey>(batch: &mut Batch, table: &Table, fam: Fam) -> Result<(), Error> {
    let name = cstring("set name", fam.set())?;
    let set: Set<'_, K> = Set::new_named(&name, set_id(fam), table, ProtoFamily::Inet);
    batch.add(&set, MsgType::Add);
    Ok(())
}

fn nfproto(rule: &mut Rule<'_>, fam: Fam) {
    rule.add_expr(&Meta::NfProto);
    let v = match fam {
        Fam::V4 => libc::NFPROTO_IPV4 as u8,
        Fam::V6 => libc::NFPROTO_IPV6 as u8,
    };
    rule.add_expr(&Cmp::new(CmpOp::Eq, v));
}

/// `<fam> saddr|daddr <net>`: load the address, mask it unless it is a host prefix, compare.
fn prefix_match(rule: &mut Rule<'_>, net: &IpNet, source: bool) {
    let (field, addr, mask): (_, Vec<u8>, Vec<u8>) = match net {
        IpNet::V4(n) => (
            NetworkHeaderField::Ipv4(if source {
                Ipv4HeaderField::Saddr
            } else {
                Ipv4HeaderField::Daddr
            }),
            n.network().octets().to_vec(),
            n.netmask().octets().to_vec(),
        ),
        IpNet::V6(n) => (
            NetworkHeaderField::Ipv6(if source {
                Ipv6HeaderField::Saddr
            } else {
                Ipv6HeaderField::Daddr
            }),
            n.network().octets().to_vec(),
            n.netmask().octets().to_vec(),
        ),
    };
    rule.add_expr(&Payload::Network(field));
    if net.prefix_len() != net.max_prefix_len() {
        let zero = vec![0u8; mask.len()];
        rule.add_expr(&Bitwise::new(mask.as_slice(), zero.as_slice()));
    }
    rule.add_expr(&Cmp::new(CmpOp::Eq, addr.as_slice()));
}

fn add_rule(
    batch: &mut Batch,
    chain: &Chain<'_>,
    spec: &RuleSpec,
    comment: &str,
    after: Option<u64>,
) -> Result<(), Error> {
    let mut rule = Rule::new(chain);
    match spec {
        RuleSpec::McastReturn(fam) => {
            nfproto(&mut rule, *fam);
            prefix_match(&mut rule, &fam.multicast(), false);
            rule.add_expr(&Verdict::Return);
        }
        RuleSpec::SubnetReturn(net) => {
            nfproto(&mut rule, Fam::of(net.addr()));
            prefix_match(&mut rule, net, true);
            prefix_match(&mut rule, net, false);
            rule.add_expr(&Verdict::Return);
        }
        RuleSpec::SetMasquerade(fam) => {
            nfproto(&mut rule, *fam);
            let field = match fam {
                Fam::V4 => NetworkHeaderField::Ipv4(Ipv4HeaderField::Saddr),
                Fam::V6 => NetworkHeaderField::Ipv6(Ipv6HeaderField::Saddr),
            };
            rule.add_expr(&Payload::Network(field));
            rule.add_expr(&SetLookup {
                set: cstring("set name", fam.set())?,
                id: set_id(*fam),
            });
            rule.add_expr(&Masquerade);
        }
    }
    rule.set_comment(cstring("rule comment", comment)?)
        .map_err(|reason| Error::Invalid {
            what: "rule comment",
            value: comment.to_string(),
            reason,
        })?;
    if let Some(h) = after {
        rule.set_position(h);
    }
    batch.add(&rule, MsgType::Add);
    Ok(())
}

fn elem_msg(fam: Fam) -> ElemMsg {
    ElemMsg {
        set: RawSet::new(fam),
        family: ProtoFamily::Inet,
    }
}

/// Encodes `ops` in order into one transaction (batch begin … batch end).
pub fn encode(ops: &[Op]) -> Result<FinalizedBatch, Error> {
    let tname = cstring("table name", TABLE)?;
    let table = Table::new(&tname, ProtoFamily::Inet);
    let base_name = cstring("chain name", BASE_CHAIN)?;
    let base = Chain::new(&base_name, &table);
    let mut batch = Batch::new();
    for op in ops {
        match op {
            Op::AddTable => batch.add(&table, MsgType::Add),
            Op::AddBaseChain => {
                let mut chain = Chain::new(&base_name, &table);
                chain.set_hook(Hook::PostRouting, SRCNAT_PRIORITY);
                chain.set_type(ChainType::Nat);
                chain.set_policy(Policy::Accept);
                batch.add(&chain, MsgType::Add);
            }
            Op::FlushBaseChain => {
                // DELRULE naming only table and chain deletes every rule of the chain.
                batch.add(&Rule::new(&base), MsgType::Del);
            }
            Op::AddSet(Fam::V4) => add_set::<Ipv4Addr>(&mut batch, &table, Fam::V4)?,
            Op::AddSet(Fam::V6) => add_set::<Ipv6Addr>(&mut batch, &table, Fam::V6)?,
            Op::AddRule {
                rule,
                comment,
                after,
            } => add_rule(&mut batch, &base, rule, comment, *after)?,
            Op::DelRule(handle) => {
                let mut rule = Rule::new(&base);
                rule.set_handle(*handle);
                batch.add(&rule, MsgType::Del);
            }
            Op::AddElem(e) => {
                let msg = elem_msg(e.fam());
                msg.set.add_commented_elem(e);
                batch.add(&msg, MsgType::Add);
            }
            Op::DelElem(key) => {
                let msg = elem_msg(Fam::of(*key));
                msg.set.add_key(*key);
                batch.add(&msg, MsgType::Del);
            }
        }
    }
    Ok(batch.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::plan::{plan_add, plan_remove, Elem, RuleInfo};
    use crate::MasqRule;

    #[test]
    fn encodes_full_add_and_remove_plans() {
        let rules = [
            MasqRule {
                network: "n".into(),
                container_id: "c".into(),
                ifname: "eth0".into(),
                addr: "10.22.0.5/24".parse().unwrap(),
            },
            MasqRule {
                network: "n".into(),
                container_id: "c".into(),
                ifname: "eth0".into(),
                addr: "fd00::5/64".parse().unwrap(),
            },
        ];
        let ops = plan_add(&rules, None, &mut |_| None);
        let batch = encode(&ops).unwrap();
        let seqs = batch.sequence_numbers();
        // one netlink message per op, plus optional ACKed begin/end
        let n = (seqs.end - seqs.start) as usize;
        assert!(n == ops.len() || n == ops.len() + 2, "{n} vs {}", ops.len());
        let all: Vec<u8> = batch.iter().flat_map(|p| p.to_vec()).collect();
        let has = |needle: &[u8]| all.windows(needle.len()).any(|w| w == needle);
        assert!(has(b"rcni\0"));
        assert!(has(b"masq4\0"));
        assert!(has(b"postrouting\0"));
        assert!(has(b"rcni: masquerade6\0"));
        assert!(has(crate::names::owner_comment("n", "c", "eth0").as_bytes()));
        let elems = vec![Elem {
            key: "10.22.0.5".parse().unwrap(),
            comment: crate::names::owner_comment("n", "c", "eth0"),
        }];
        let base = vec![RuleInfo {
            handle: 5,
            comment: crate::names::subnet_comment("n", &"10.22.0.0/24".parse().unwrap()),
        }];
        let rm = plan_remove("n", &elems, &base, &|_| true);
        assert_eq!(rm.len(), 2);
        assert!(encode(&rm).is_ok());
    }
}
