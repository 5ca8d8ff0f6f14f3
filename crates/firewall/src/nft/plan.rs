//! Pure planning of nftables transactions: what each call adds and removes, as a list of [`Op`]s,
//! computed from the request and (for DEL/GC) the map elements read back from our own table.
//! No kernel access here, so every decision is unit-tested without root; `encode` turns a plan
//! into one nftnl batch.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::names::{nft_masq_chain, owner_comment, owner_tag, tag_of_comment};
use crate::MasqRule;

/// Our table (family inet): the only nftables object we create or read.
pub const TABLE: &str = "rcni";
/// Base chain: type nat, hook postrouting, priority srcnat (100), policy accept.
pub const BASE_CHAIN: &str = "postrouting";
/// srcnat priority.
pub const SRCNAT_PRIORITY: i32 = 100;

/// Address family of a map / match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fam {
    /// IPv4: map `masq4`, `ip saddr`
    V4,
    /// IPv6: map `masq6`, `ip6 saddr`
    V6,
}

impl Fam {
    /// Family of an address.
    pub fn of(ip: IpAddr) -> Fam {
        match ip {
            IpAddr::V4(_) => Fam::V4,
            IpAddr::V6(_) => Fam::V6,
        }
    }
    /// The verdict map holding this family's container addresses.
    pub fn map(self) -> &'static str {
        match self {
            Fam::V4 => "masq4",
            Fam::V6 => "masq6",
        }
    }
    /// nft keyword of the network header.
    pub fn kw(self) -> &'static str {
        match self {
            Fam::V4 => "ip",
            Fam::V6 => "ip6",
        }
    }
    /// Multicast destinations never masqueraded (reference: `! -d 224.0.0.0/4` / `ff00::/8`).
    pub fn multicast(self) -> IpNet {
        match self {
            Fam::V4 => IpNet::V4(ipnet::Ipv4Net::new_assert([224, 0, 0, 0].into(), 4)),
            Fam::V6 => IpNet::V6(ipnet::Ipv6Net::new_assert(
                [0xff00, 0, 0, 0, 0, 0, 0, 0].into(),
                8,
            )),
        }
    }
}

/// One rule body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleSpec {
    /// `meta nfproto <fam> <fam> saddr vmap @<map>`
    SaddrVmap(Fam),
    /// `meta nfproto <fam> <fam> daddr <net> return`
    DaddrReturn(IpNet),
    /// `masquerade`
    Masquerade,
}

/// One message of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// create table `inet rcni` if absent
    AddTable,
    /// create the base chain if absent
    AddBaseChain,
    /// create a regular chain if absent
    AddChain(String),
    /// delete every rule of a chain (content is rewritten right after)
    FlushChain(String),
    /// create a family's verdict map if absent
    AddMap(Fam),
    /// append a rule
    AddRule {
        /// chain name
        chain: String,
        /// rule body
        rule: RuleSpec,
    },
    /// add one map element `key : jump chain` with the owner comment
    AddElem(Elem),
    /// delete one map element by key
    DelElem(Fam, IpAddr),
    /// delete a (flushed, unreferenced) per-subnet chain
    DelChain(String),
}

/// A verdict-map element as stored in the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elem {
    /// container address (the key)
    pub key: IpAddr,
    /// chain jumped to (the data)
    pub chain: String,
    /// owner comment (`<owner tag> net: …, id: …, if: …`)
    pub comment: String,
}

impl Elem {
    /// Which map it lives in.
    pub fn fam(&self) -> Fam {
        Fam::of(self.key)
    }
    /// Owner tag at the start of the comment.
    pub fn tag(&self) -> &str {
        tag_of_comment(&self.comment)
    }
}

impl fmt::Display for RuleSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleSpec::SaddrVmap(fam) => write!(f, "{} saddr vmap @{}", fam.kw(), fam.map()),
            RuleSpec::DaddrReturn(net) => {
                let fam = Fam::of(net.addr());
                write!(f, "{} daddr {net} return", fam.kw())
            }
            RuleSpec::Masquerade => write!(f, "masquerade"),
        }
    }
}

/// nft-syntax rendering (for logs, errors and tests).
impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = format!("inet {TABLE}");
        match self {
            Op::AddTable => write!(f, "add table {t}"),
            Op::AddBaseChain => write!(
                f,
                "add chain {t} {BASE_CHAIN} {{ type nat hook postrouting priority srcnat; policy accept; }}"
            ),
            Op::AddChain(c) => write!(f, "add chain {t} {c}"),
            Op::FlushChain(c) => write!(f, "flush chain {t} {c}"),
            Op::AddMap(fam) => write!(
                f,
                "add map {t} {} {{ type {}_addr : verdict; }}",
                fam.map(),
                match fam {
                    Fam::V4 => "ipv4",
                    Fam::V6 => "ipv6",
                }
            ),
            Op::AddRule { chain, rule } => write!(f, "add rule {t} {chain} {rule}"),
            Op::AddElem(e) => write!(
                f,
                "add element {t} {} {{ {} comment \"{}\" : jump {} }}",
                e.fam().map(),
                e.key,
                e.comment,
                e.chain
            ),
            Op::DelElem(fam, key) => write!(f, "delete element {t} {} {{ {key} }}", fam.map()),
            Op::DelChain(c) => write!(f, "delete chain {t} {c}"),
        }
    }
}

/// Table, both maps and the base chain, created idempotently; the base chain's two rules are
/// rewritten (flush + add) so repeated ADDs never duplicate them. Constant size.
pub fn skeleton() -> Vec<Op> {
    vec![
        Op::AddTable,
        Op::AddMap(Fam::V4),
        Op::AddMap(Fam::V6),
        Op::AddBaseChain,
        Op::FlushChain(BASE_CHAIN.into()),
        Op::AddRule {
            chain: BASE_CHAIN.into(),
            rule: RuleSpec::SaddrVmap(Fam::V4),
        },
        Op::AddRule {
            chain: BASE_CHAIN.into(),
            rule: RuleSpec::SaddrVmap(Fam::V6),
        },
    ]
}

/// ADD: skeleton, then per (network, subnet) chain rewritten to its fixed content, then one
/// element per address. `existing(fam, ip)` is a keyed lookup of the current element (O(1) in
/// the kernel), so the plan's size depends only on `rules`, never on how many containers exist.
pub fn plan_add(rules: &[MasqRule], existing: &mut dyn FnMut(IpAddr) -> Option<Elem>) -> Vec<Op> {
    let mut ops = skeleton();
    let mut chains: BTreeMap<String, IpNet> = BTreeMap::new();
    for r in rules {
        chains.insert(nft_masq_chain(&r.network, &r.subnet()), r.subnet());
    }
    for (name, subnet) in &chains {
        let fam = Fam::of(subnet.addr());
        ops.push(Op::AddChain(name.clone()));
        ops.push(Op::FlushChain(name.clone()));
        for rule in [
            RuleSpec::DaddrReturn(*subnet),
            RuleSpec::DaddrReturn(fam.multicast()),
            RuleSpec::Masquerade,
        ] {
            ops.push(Op::AddRule {
                chain: name.clone(),
                rule,
            });
        }
    }
    let mut seen = BTreeSet::new();
    for r in rules {
        let key = r.ip();
        if !seen.insert(key) {
            continue;
        }
        let want = Elem {
            key,
            chain: nft_masq_chain(&r.network, &r.subnet()),
            comment: owner_comment(&r.network, &r.container_id, &r.ifname),
        };
        match existing(key) {
            Some(cur) if cur.chain == want.chain && cur.tag() == want.tag() => {}
            Some(_) => {
                // A stale owner (missed DEL, address reused) or another network still holds the
                // address: take it over inside the same transaction.
                ops.push(Op::DelElem(Fam::of(key), key));
                ops.push(Op::AddElem(want));
            }
            None => ops.push(Op::AddElem(want)),
        }
    }
    ops
}

/// DEL/GC: delete `remove`, then every per-subnet chain that only removed elements referenced
/// (chains are shared by all containers of a network+subnet, so they go with the last one).
pub fn plan_remove(all: &[Elem], remove: &dyn Fn(&Elem) -> bool) -> Vec<Op> {
    let mut ops = Vec::new();
    let mut dropped = BTreeSet::new();
    let mut still = BTreeSet::new();
    for e in all {
        if remove(e) {
            ops.push(Op::DelElem(e.fam(), e.key));
            dropped.insert(e.chain.clone());
        } else {
            still.insert(e.chain.clone());
        }
    }
    for chain in dropped.difference(&still) {
        if chain.starts_with("masq_") {
            ops.push(Op::FlushChain(chain.clone()));
            ops.push(Op::DelChain(chain.clone()));
        }
    }
    ops
}

/// Elements owned by exactly this attachment.
pub fn owned_by(network: &str, container_id: &str, ifname: &str) -> impl Fn(&Elem) -> bool {
    let tag = owner_tag(network, container_id, ifname);
    move |e: &Elem| e.tag() == tag
}

/// Elements of `network` whose owner is not in `keep`.
pub fn stale_in(network: &str, keep: &[(String, String)]) -> impl Fn(&Elem) -> bool {
    let prefix = format!("{}-", crate::names::network_hash(network));
    let kept: BTreeSet<String> = keep
        .iter()
        .map(|(cid, ifname)| owner_tag(network, cid, ifname))
        .collect();
    move |e: &Elem| e.tag().starts_with(&prefix) && !kept.contains(e.tag())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(net: &str, cid: &str, addr: &str) -> MasqRule {
        MasqRule {
            network: net.into(),
            container_id: cid.into(),
            ifname: "eth0".into(),
            addr: addr.parse().unwrap(),
        }
    }

    fn render(ops: &[Op]) -> Vec<String> {
        ops.iter().map(|o| o.to_string()).collect()
    }

    #[test]
    fn add_plan_dual_stack() {
        let rules = [
            rule("n", "c1", "10.22.0.5/24"),
            rule("n", "c1", "fd00::5/64"),
        ];
        let ops = render(&plan_add(&rules, &mut |_| None));
        let c4 = nft_masq_chain("n", &"10.22.0.0/24".parse().unwrap());
        let c6 = nft_masq_chain("n", &"fd00::/64".parse().unwrap());
        let tag = owner_tag("n", "c1", "eth0");
        let expect_tail = vec![
            format!("add chain inet rcni {c4}"),
            format!("flush chain inet rcni {c4}"),
            format!("add rule inet rcni {c4} ip daddr 10.22.0.0/24 return"),
            format!("add rule inet rcni {c4} ip daddr 224.0.0.0/4 return"),
            format!("add rule inet rcni {c4} masquerade"),
            format!("add chain inet rcni {c6}"),
            format!("flush chain inet rcni {c6}"),
            format!("add rule inet rcni {c6} ip6 daddr fd00::/64 return"),
            format!("add rule inet rcni {c6} ip6 daddr ff00::/8 return"),
            format!("add rule inet rcni {c6} masquerade"),
            format!(
                "add element inet rcni masq4 {{ 10.22.0.5 comment \"{tag} net: n, id: c1, if: eth0\" : jump {c4} }}"
            ),
            format!(
                "add element inet rcni masq6 {{ fd00::5 comment \"{tag} net: n, id: c1, if: eth0\" : jump {c6} }}"
            ),
        ];
        assert_eq!(ops[..7], render(&skeleton())[..]);
        assert_eq!(ops[7..], expect_tail[..]);
        assert_eq!(
            ops[5],
            "add rule inet rcni postrouting ip saddr vmap @masq4"
        );
    }

    #[test]
    fn add_plan_is_constant_size_and_idempotent() {
        let r = rule("n", "c1", "10.22.0.5/24");
        let same = Elem {
            key: r.ip(),
            chain: nft_masq_chain("n", &r.subnet()),
            comment: owner_comment("n", "c1", "eth0"),
        };
        let ops = plan_add(std::slice::from_ref(&r), &mut |_| Some(same.clone()));
        assert!(!ops
            .iter()
            .any(|o| matches!(o, Op::AddElem(_) | Op::DelElem(..))));
        // a stale owner of the same address is replaced in the same transaction
        let stale = Elem {
            comment: owner_comment("n", "old", "eth0"),
            ..same
        };
        let ops = plan_add(std::slice::from_ref(&r), &mut |_| Some(stale.clone()));
        let n = ops.len();
        assert!(matches!(ops[n - 2], Op::DelElem(Fam::V4, _)));
        assert!(matches!(&ops[n - 1], Op::AddElem(e) if e.tag() == owner_tag("n", "c1", "eth0")));
    }

    fn elem(net: &str, cid: &str, ip: &str, sub: &str) -> Elem {
        Elem {
            key: ip.parse().unwrap(),
            chain: nft_masq_chain(net, &sub.parse().unwrap()),
            comment: owner_comment(net, cid, "eth0"),
        }
    }

    #[test]
    fn remove_plan_keeps_shared_chain_until_last() {
        let all = vec![
            elem("n", "c1", "10.22.0.5", "10.22.0.0/24"),
            elem("n", "c2", "10.22.0.6", "10.22.0.0/24"),
            elem("n", "c1", "fd00::5", "fd00::/64"),
        ];
        let ops = render(&plan_remove(&all, &owned_by("n", "c1", "eth0")));
        let c6 = nft_masq_chain("n", &"fd00::/64".parse().unwrap());
        assert_eq!(
            ops,
            vec![
                "delete element inet rcni masq4 { 10.22.0.5 }".to_string(),
                "delete element inet rcni masq6 { fd00::5 }".to_string(),
                format!("flush chain inet rcni {c6}"),
                format!("delete chain inet rcni {c6}"),
            ]
        );
        assert!(plan_remove(&all, &owned_by("n", "nope", "eth0")).is_empty());
    }

    #[test]
    fn gc_plan_only_touches_its_network() {
        let all = vec![
            elem("n", "c1", "10.22.0.5", "10.22.0.0/24"),
            elem("n", "c2", "10.22.0.6", "10.22.0.0/24"),
            elem("other", "c3", "10.33.0.6", "10.33.0.0/24"),
        ];
        let keep = vec![("c2".to_string(), "eth0".to_string())];
        let ops = render(&plan_remove(&all, &stale_in("n", &keep)));
        assert_eq!(ops, vec!["delete element inet rcni masq4 { 10.22.0.5 }"]);
        let ops = plan_remove(&all, &stale_in("n", &[]));
        assert_eq!(ops.len(), 4); // two elements, then flush+delete of the shared chain
    }
}
