//! Lowers a masquerade plan to the shared nftables operations (`crate::nft::batch`): pure, no
//! kernel access.

use nftnl::expr::{Expression, Masquerade, Verdict};
use nftnl::{ChainType, Hook, ProtoFamily};

use super::plan::{masq_set, Op, RuleSpec, BASE_CHAIN, SRCNAT_PRIORITY};
use crate::nft::batch::{self, addr_bytes, addr_set, BaseChain};
use crate::nft::object::{addr_load, boxed, lookup, nfproto, prefix_match, R1};
use crate::{Error, Family};

/// Set ids tie a rule's lookup to a set created in the same transaction.
fn set_id(fam: Family) -> u32 {
    match fam {
        Family::V4 => 1,
        Family::V6 => 2,
    }
}

fn rule_exprs(spec: &RuleSpec) -> Vec<Box<dyn Expression>> {
    let mut exprs: Vec<Box<dyn Expression>> = Vec::new();
    match spec {
        RuleSpec::McastReturn(fam) => {
            exprs.extend(boxed(nfproto(*fam)));
            exprs.extend(boxed(prefix_match(&fam.multicast(), false)));
            exprs.push(Box::new(Verdict::Return));
        }
        RuleSpec::SubnetReturn(net) => {
            exprs.extend(boxed(nfproto(Family::of(net.addr()))));
            exprs.extend(boxed(prefix_match(net, true)));
            exprs.extend(boxed(prefix_match(net, false)));
            exprs.push(Box::new(Verdict::Return));
        }
        RuleSpec::SetMasquerade(fam) => {
            exprs.extend(boxed(nfproto(*fam)));
            exprs.extend(boxed([
                addr_load(*fam, true),
                lookup(masq_set(*fam), set_id(*fam), R1, None, false),
            ]));
            exprs.push(Box::new(Masquerade));
        }
    }
    exprs
}

/// The shared operations of one masquerade operation, all in table `inet rcni`.
pub(crate) fn lower(op: &Op) -> Result<Vec<batch::Op>, Error> {
    Ok(vec![match op {
        Op::AddTable => batch::Op::AddTable,
        Op::AddBaseChain => batch::Op::AddChain {
            name: BASE_CHAIN,
            base: Some(BaseChain {
                hook: Hook::PostRouting,
                priority: SRCNAT_PRIORITY,
                kind: ChainType::Nat,
            }),
        },
        Op::FlushBaseChain => batch::Op::FlushChain(BASE_CHAIN),
        Op::AddSet(fam) => batch::Op::AddSet(addr_set(
            ProtoFamily::Inet,
            masq_set(*fam),
            set_id(*fam),
            *fam,
        )),
        Op::AddRule {
            rule,
            comment,
            after,
        } => batch::Op::AddRule {
            chain: BASE_CHAIN,
            exprs: rule_exprs(rule),
            comment: comment.clone(),
            after: *after,
        },
        Op::DelRule(handle) => batch::Op::DelRule {
            chain: BASE_CHAIN,
            handle: *handle,
        },
        Op::AddElem(e) => batch::Op::AddElem {
            set: masq_set(e.fam()),
            key: addr_bytes(e.key),
            data: Vec::new(),
            comment: e.comment.clone(),
        },
        Op::DelElem(key) => batch::Op::DelElem {
            set: masq_set(Family::of(*key)),
            key: addr_bytes(*key),
        },
    }])
}

#[cfg(test)]
mod tests {
    use super::super::MasqRule;
    use super::*;
    use crate::masquerade::plan::{plan_add, plan_remove, Elem, RuleInfo};

    fn encode(ops: &[Op]) -> Result<nftnl::FinalizedBatch, Error> {
        crate::nft::encode_all(ProtoFamily::Inet, ops, lower)
    }

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
