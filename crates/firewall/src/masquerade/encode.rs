//! Turns a masquerade plan into one nftnl batch, with nftnl's safe wrappers and the shared
//! builders of `crate::nft::object` (set lookups, commented elements).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use nftnl::expr::{
    Bitwise, Cmp, CmpOp, Ipv4HeaderField, Ipv6HeaderField, Masquerade, Meta, NetworkHeaderField,
    Payload, Verdict,
};
use nftnl::set::{Set, SetKey};
use nftnl::{
    Batch, Chain, ChainType, FinalizedBatch, Hook, MsgType, Policy, ProtoFamily, Rule, Table,
};

use super::plan::{masq_set, Op, RuleSpec, BASE_CHAIN, SRCNAT_PRIORITY, TABLE};
use crate::nft::object::{cstring, lookup, set_rule_comment, SetMsg, R1};
use crate::{Error, Family};

/// Set ids tie a rule's lookup to a set created in the same transaction.
fn set_id(fam: Family) -> u32 {
    match fam {
        Family::V4 => 1,
        Family::V6 => 2,
    }
}

fn add_set<K: SetKey>(batch: &mut Batch, table: &Table, fam: Family) -> Result<(), Error> {
    let name = cstring("set name", masq_set(fam))?;
    let set: Set<'_, K> = Set::new_named(&name, set_id(fam), table, ProtoFamily::Inet);
    batch.add(&set, MsgType::Add);
    Ok(())
}

fn nfproto(rule: &mut Rule<'_>, fam: Family) {
    rule.add_expr(&Meta::NfProto);
    rule.add_expr(&Cmp::new(CmpOp::Eq, fam.nfproto()));
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
            nfproto(&mut rule, Family::of(net.addr()));
            prefix_match(&mut rule, net, true);
            prefix_match(&mut rule, net, false);
            rule.add_expr(&Verdict::Return);
        }
        RuleSpec::SetMasquerade(fam) => {
            nfproto(&mut rule, *fam);
            let field = match fam {
                Family::V4 => NetworkHeaderField::Ipv4(Ipv4HeaderField::Saddr),
                Family::V6 => NetworkHeaderField::Ipv6(Ipv6HeaderField::Saddr),
            };
            rule.add_expr(&Payload::Network(field));
            rule.add_expr(&lookup(masq_set(*fam), set_id(*fam), R1, None, false));
            rule.add_expr(&Masquerade);
        }
    }
    set_rule_comment(&mut rule, comment)?;
    if let Some(h) = after {
        rule.set_position(h);
    }
    batch.add(&rule, MsgType::Add);
    Ok(())
}

fn key_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
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
            Op::AddSet(Family::V4) => add_set::<Ipv4Addr>(&mut batch, &table, Family::V4)?,
            Op::AddSet(Family::V6) => add_set::<Ipv6Addr>(&mut batch, &table, Family::V6)?,
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
                let msg = SetMsg::elem(
                    ProtoFamily::Inet,
                    masq_set(e.fam()),
                    &key_bytes(e.key),
                    &[],
                    Some(&e.comment),
                )?;
                batch.add(&msg, MsgType::Add);
            }
            Op::DelElem(key) => {
                let msg = SetMsg::elem(
                    ProtoFamily::Inet,
                    masq_set(Family::of(*key)),
                    &key_bytes(*key),
                    &[],
                    None,
                )?;
                batch.add(&msg, MsgType::Del);
            }
        }
    }
    Ok(batch.finalize())
}

#[cfg(test)]
mod tests {
    use super::super::MasqRule;
    use super::*;
    use crate::masquerade::plan::{plan_add, plan_remove, Elem, RuleInfo};

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
