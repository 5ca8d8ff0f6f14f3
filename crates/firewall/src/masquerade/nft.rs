//! Masquerade on nftables (the default backend), in the suite's table `inet rcni`, changed by
//! exactly one netlink transaction per call, never by exec'ing `nft`.
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
//!
//! The file reads top-down: the rule bodies, the pure planner ([`plan_add`], [`plan_remove`]:
//! what a call adds and removes, as shared nftables [`Op`]s, from the request and what was read
//! back; unit-tested without root), then the backend that reads, plans and applies under the
//! flock.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use nftnl::expr::{Masquerade, Verdict};
use nftnl::{ChainType, Hook, ProtoFamily};

use super::{Firewall, MasqRule};
use crate::names::{
    network_hash, owner_comment, owner_tag, parse_subnet_tag, subnet_comment, subnet_tag,
    tag_of_comment,
};
use crate::nft::batch::{add_addr, addr_set, del_addr, BaseChain, Body, Op};
use crate::nft::keep_err;
use crate::nft::netlink::Nl;
use crate::nft::object::{addr_load, boxed, lookup, nfproto, prefix_match, R1};
pub use crate::nft::{Elem, RuleInfo, TABLE};
use crate::{lock, validate_owner, validate_rules, Error, Family, LOCK_PATH};

/// The set holding a family's masqueraded container addresses.
pub fn masq_set(fam: Family) -> &'static str {
    match fam {
        Family::V4 => "masq4",
        Family::V6 => "masq6",
    }
}

/// Base chain: type nat, hook postrouting, priority srcnat (100), policy accept.
pub const BASE_CHAIN: &str = "postrouting";
/// srcnat priority.
pub const SRCNAT_PRIORITY: i32 = 100;
/// Comments of the fixed rules, so a dump of the base chain recognizes them.
pub const FIXED_MCAST4: &str = "rcni: multicast4";
/// see [`FIXED_MCAST4`]
pub const FIXED_MCAST6: &str = "rcni: multicast6";
/// see [`FIXED_MCAST4`]
pub const FIXED_MASQ4: &str = "rcni: masquerade4";
/// see [`FIXED_MCAST4`]
pub const FIXED_MASQ6: &str = "rcni: masquerade6";

fn net_kw(net: &IpNet) -> &'static str {
    Family::of(net.addr()).kw()
}

/// Set ids tie a rule's lookup to a set created in the same transaction.
fn set_id(fam: Family) -> u32 {
    match fam {
        Family::V4 => 1,
        Family::V6 => 2,
    }
}

/// `<fam> daddr <multicast> return`
fn mcast_return(fam: Family) -> Body {
    let mut exprs = boxed(nfproto(fam));
    exprs.extend(boxed(prefix_match(&fam.multicast(), false)));
    exprs.push(Box::new(Verdict::Return));
    Body {
        text: format!("{} daddr {} return", fam.kw(), fam.multicast()),
        exprs,
    }
}

/// `<fam> saddr <subnet> <fam> daddr <subnet> return`: traffic inside a container subnet is
/// never masqueraded (reference: `-d <subnet> -j ACCEPT` in the per-container chain).
fn subnet_return(net: &IpNet) -> Body {
    let mut exprs = boxed(nfproto(Family::of(net.addr())));
    exprs.extend(boxed(prefix_match(net, true)));
    exprs.extend(boxed(prefix_match(net, false)));
    exprs.push(Box::new(Verdict::Return));
    let kw = net_kw(net);
    Body {
        text: format!("{kw} saddr {net} {kw} daddr {net} return"),
        exprs,
    }
}

/// `<fam> saddr @masq<fam> masquerade`
fn set_masquerade(fam: Family) -> Body {
    let mut exprs = boxed(nfproto(fam));
    exprs.extend(boxed([
        addr_load(fam, true),
        lookup(masq_set(fam), set_id(fam), R1, None, false),
    ]));
    exprs.push(Box::new(Masquerade));
    Body {
        text: format!("{} saddr @{} masquerade", fam.kw(), masq_set(fam)),
        exprs,
    }
}

fn add_set(fam: Family) -> Op {
    Op::AddSet(addr_set(ProtoFamily::Inet, masq_set(fam), set_id(fam), fam))
}

fn add_base_chain() -> Op {
    Op::AddChain {
        name: BASE_CHAIN,
        base: Some(BaseChain {
            hook: Hook::PostRouting,
            priority: SRCNAT_PRIORITY,
            kind: ChainType::Nat,
            text: "nat hook postrouting priority srcnat",
        }),
    }
}

fn add_elem(e: &Elem) -> Op {
    add_addr(masq_set(e.fam()), e.key, &e.comment)
}

fn del_elem(key: IpAddr) -> Op {
    del_addr(masq_set(Family::of(key)), key)
}

fn fixed_head() -> Vec<(Body, &'static str)> {
    vec![
        (mcast_return(Family::V4), FIXED_MCAST4),
        (mcast_return(Family::V6), FIXED_MCAST6),
    ]
}

fn fixed_tail() -> Vec<(Body, &'static str)> {
    vec![
        (set_masquerade(Family::V4), FIXED_MASQ4),
        (set_masquerade(Family::V6), FIXED_MASQ6),
    ]
}

fn add(rule: Body, comment: &str, after: Option<u64>) -> Op {
    Op::AddRule {
        chain: BASE_CHAIN,
        rule,
        comment: comment.to_string(),
        after,
    }
}

/// The complete base chain in order: fixed returns, subnet returns, fixed masquerades.
fn full_chain(subnets: &[(String, IpNet)]) -> Vec<Op> {
    let mut ops = Vec::new();
    for (r, c) in fixed_head() {
        ops.push(add(r, c, None));
    }
    for (comment, net) in subnets {
        ops.push(add(subnet_return(net), comment, None));
    }
    for (r, c) in fixed_tail() {
        ops.push(add(r, c, None));
    }
    ops
}

/// ADD. `base` is the base chain as read back (None: table/chain absent). `existing(ip)` is a
/// keyed element lookup (O(1) in the kernel). The plan's size depends only on `rules` and on
/// the number of subnets, never on how many containers exist; in the steady state it is just
/// the element adds, with no deletion (deletions make the kernel wait for an RCU grace period
/// when the socket closes) and no jump (jumps make every commit re-validate the whole table).
pub(crate) fn plan_add(
    rules: &[MasqRule],
    base: Option<&[RuleInfo]>,
    existing: &mut dyn FnMut(IpAddr) -> Option<Elem>,
) -> Vec<Op> {
    let mut wanted: Vec<(String, IpNet)> = Vec::new();
    for r in rules {
        let c = subnet_comment(&r.network, &r.subnet());
        if !wanted
            .iter()
            .any(|(w, _)| tag_of_comment(w) == tag_of_comment(&c))
        {
            wanted.push((c, r.subnet()));
        }
    }
    let mut ops = Vec::new();
    match base {
        None => {
            ops.extend([
                Op::AddTable,
                add_set(Family::V4),
                add_set(Family::V6),
                add_base_chain(),
            ]);
            ops.extend(full_chain(&wanted));
        }
        Some(present) => {
            let has = |c: &str| present.iter().any(|r| r.comment == c);
            let fixed_ok = [FIXED_MCAST4, FIXED_MCAST6, FIXED_MASQ4, FIXED_MASQ6]
                .iter()
                .all(|c| has(c));
            let anchor = present
                .iter()
                .rev()
                .find(|r| r.comment == FIXED_MCAST6 || r.comment == FIXED_MCAST4);
            match (fixed_ok, anchor) {
                (true, Some(anchor)) => {
                    for (comment, net) in &wanted {
                        let tag = tag_of_comment(comment);
                        if !present.iter().any(|r| tag_of_comment(&r.comment) == tag) {
                            ops.push(add(subnet_return(net), comment, Some(anchor.handle)));
                        }
                    }
                }
                _ => {
                    // Someone changed our chain: rebuild it whole, keeping every subnet rule.
                    let mut all = wanted.clone();
                    for r in present {
                        if let Some((_, net)) = parse_subnet_tag(tag_of_comment(&r.comment)) {
                            if !all
                                .iter()
                                .any(|(c, _)| tag_of_comment(c) == tag_of_comment(&r.comment))
                            {
                                all.push((r.comment.clone(), net));
                            }
                        }
                    }
                    ops.extend([Op::AddTable, add_set(Family::V4), add_set(Family::V6)]);
                    ops.push(Op::FlushChain(BASE_CHAIN));
                    ops.extend(full_chain(&all));
                }
            }
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
            comment: owner_comment(&r.network, &r.container_id, &r.ifname),
        };
        match existing(key) {
            Some(cur) if cur.tag() == want.tag() => {}
            Some(_) => {
                // A stale owner (missed DEL, address reused) still holds the address: take it
                // over inside the same transaction.
                ops.push(del_elem(key));
                ops.push(add_elem(&want));
            }
            None => ops.push(add_elem(&want)),
        }
    }
    ops
}

/// DEL/GC of `network`: delete the elements selected by `remove`, then that network's subnet
/// rules no remaining element of the network needs.
pub(crate) fn plan_remove(
    network: &str,
    all: &[Elem],
    base: &[RuleInfo],
    remove: &dyn Fn(&Elem) -> bool,
) -> Vec<Op> {
    let nethash = network_hash(network);
    let prefix = format!("{nethash}-");
    let mut ops = Vec::new();
    let mut remaining = Vec::new();
    for e in all {
        if remove(e) {
            ops.push(del_elem(e.key));
        } else if e.tag().starts_with(&prefix) {
            remaining.push(e.key);
        }
    }
    for r in base {
        if let Some((h, net)) = parse_subnet_tag(tag_of_comment(&r.comment)) {
            if h == nethash && !remaining.iter().any(|ip| net.contains(ip)) {
                ops.push(Op::DelRule {
                    chain: BASE_CHAIN,
                    handle: r.handle,
                });
            }
        }
    }
    ops
}

/// Whether the base chain holds the exemption rule of (network, subnet).
pub fn has_subnet_rule(base: &[RuleInfo], network: &str, subnet: &IpNet) -> bool {
    let tag = subnet_tag(network, subnet);
    base.iter().any(|r| tag_of_comment(&r.comment) == tag)
}

/// Elements owned by exactly this attachment.
pub fn owned_by(network: &str, container_id: &str, ifname: &str) -> impl Fn(&Elem) -> bool {
    let tag = owner_tag(network, container_id, ifname);
    move |e: &Elem| e.tag() == tag
}

/// Elements of `network` whose owner is not in `keep`.
pub fn stale_in(network: &str, keep: &[(String, String)]) -> impl Fn(&Elem) -> bool {
    let prefix = format!("{}-", network_hash(network));
    let kept: BTreeSet<String> = keep
        .iter()
        .map(|(cid, ifname)| owner_tag(network, cid, ifname))
        .collect();
    move |e: &Elem| e.tag().starts_with(&prefix) && !kept.contains(e.tag())
}

/// The nftables implementation of [`Firewall`].
pub(crate) struct NftMasquerade {
    lock_path: PathBuf,
}

impl NftMasquerade {
    /// Uses [`LOCK_PATH`].
    pub(crate) fn new() -> Self {
        Self {
            lock_path: PathBuf::from(LOCK_PATH),
        }
    }

    fn apply(nl: &mut Nl, ops: &[Op], what: &str) -> Result<(), Error> {
        crate::nft::apply(nl, ProtoFamily::Inet, ops, what)
    }

    /// One element by key; None if absent or if the table/set does not exist yet.
    fn get_elem(nl: &mut Nl, key: IpAddr) -> Result<Option<Elem>, Error> {
        crate::nft::addr_elem(nl, masq_set, key)
    }

    fn dump_base_rules(nl: &mut Nl) -> Result<Option<Vec<RuleInfo>>, Error> {
        nl.chain_rules(ProtoFamily::Inet, BASE_CHAIN)
    }

    /// Every element of both sets (DEL, GC, listing).
    fn all_elems(nl: &mut Nl) -> Result<Vec<Elem>, Error> {
        crate::nft::all_addr_elems(nl, masq_set)
    }
}

impl Firewall for NftMasquerade {
    fn add_masquerade(&self, rules: &[MasqRule]) -> Result<(), Error> {
        validate_rules(rules)?;
        if rules.is_empty() {
            return Ok(());
        }
        let _guard = lock::lock(&self.lock_path)?;
        let mut nl = Nl::open()?;
        let base = Self::dump_base_rules(&mut nl)?;
        let mut err = None;
        let ops = plan_add(rules, base.as_deref(), &mut |ip| {
            keep_err(&mut err, Self::get_elem(&mut nl, ip))
        });
        err.map_or(Ok(()), Err)?;
        Self::apply(&mut nl, &ops, "add masquerade")
    }

    fn del_masquerade(&self, network: &str, container_id: &str, ifname: &str) -> Result<(), Error> {
        validate_owner(network, container_id, ifname)?;
        let _guard = lock::lock(&self.lock_path)?;
        let mut nl = Nl::open()?;
        let all = Self::all_elems(&mut nl)?;
        let base = Self::dump_base_rules(&mut nl)?.unwrap_or_default();
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
        let Some(base) = Self::dump_base_rules(&mut nl)? else {
            return Err(Error::Missing(format!(
                "chain inet {TABLE} {BASE_CHAIN} does not exist"
            )));
        };
        for fixed in [FIXED_MCAST4, FIXED_MCAST6, FIXED_MASQ4, FIXED_MASQ6] {
            if !base.iter().any(|r| r.comment == fixed) {
                return Err(Error::Missing(format!(
                    "rule \"{fixed}\" missing from chain inet {TABLE} {BASE_CHAIN}"
                )));
            }
        }
        for r in rules {
            let want = owned_by(&r.network, &r.container_id, &r.ifname);
            let set = masq_set(Family::of(r.ip()));
            match Self::get_elem(&mut nl, r.ip())? {
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
        let base = Self::dump_base_rules(&mut nl)?.unwrap_or_default();
        let ops = plan_remove(network, &all, &base, &stale_in(network, keep));
        // Element deletions come first in the plan, rule deletions last, so chunks (which keep
        // each transaction well under the socket buffer) never remove a rule still needed.
        for chunk in ops.chunks(512) {
            Self::apply(&mut nl, chunk, "garbage-collect masquerade")?;
        }
        Ok(())
    }
}

/// Every element of our two address sets (read as DEL and GC read them) and every rule of the
/// base chain.
pub(crate) fn list(nl: &mut Nl) -> Result<Vec<crate::entry::Entry>, Error> {
    let mut out: Vec<_> = NftMasquerade::all_elems(nl)?
        .into_iter()
        .map(|e| {
            let set = masq_set(e.fam());
            crate::nft::elem_entry(ProtoFamily::Inet, set, e.key.to_string(), &e.comment)
        })
        .collect();
    out.extend(crate::nft::rule_entries(
        nl,
        ProtoFamily::Inet,
        &[BASE_CHAIN],
    )?);
    Ok(out)
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
        ops.iter()
            .map(|o| o.nft(ProtoFamily::Inet).to_string())
            .collect()
    }

    fn fixed_present() -> Vec<RuleInfo> {
        [FIXED_MCAST4, FIXED_MCAST6, FIXED_MASQ4, FIXED_MASQ6]
            .iter()
            .enumerate()
            .map(|(i, c)| RuleInfo {
                handle: i as u64 + 2,
                comment: c.to_string(),
            })
            .collect()
    }

    #[test]
    fn first_add_builds_everything_in_order() {
        let rules = [
            rule("n", "c1", "10.22.0.5/24"),
            rule("n", "c1", "fd00::5/64"),
        ];
        let ops = render(&plan_add(&rules, None, &mut |_| None));
        let h = network_hash("n");
        let tag = owner_tag("n", "c1", "eth0");
        let expect = vec![
            "add table inet rcni".to_string(),
            "add set inet rcni masq4 { type ipv4_addr; }".into(),
            "add set inet rcni masq6 { type ipv6_addr; }".into(),
            "add chain inet rcni postrouting { type nat hook postrouting priority srcnat; policy accept; }".into(),
            "add rule inet rcni postrouting ip daddr 224.0.0.0/4 return comment \"rcni: multicast4\"".into(),
            "add rule inet rcni postrouting ip6 daddr ff00::/8 return comment \"rcni: multicast6\"".into(),
            format!("add rule inet rcni postrouting ip saddr 10.22.0.0/24 ip daddr 10.22.0.0/24 return comment \"{h}:10.22.0.0/24 net: n\""),
            format!("add rule inet rcni postrouting ip6 saddr fd00::/64 ip6 daddr fd00::/64 return comment \"{h}:fd00::/64 net: n\""),
            "add rule inet rcni postrouting ip saddr @masq4 masquerade comment \"rcni: masquerade4\"".into(),
            "add rule inet rcni postrouting ip6 saddr @masq6 masquerade comment \"rcni: masquerade6\"".into(),
            format!("add element inet rcni masq4 {{ 10.22.0.5 comment \"{tag} net: n, id: c1, if: eth0\" }}"),
            format!("add element inet rcni masq6 {{ fd00::5 comment \"{tag} net: n, id: c1, if: eth0\" }}"),
        ];
        assert_eq!(ops, expect);
    }

    #[test]
    fn steady_state_add_is_one_element() {
        let r = rule("n", "c2", "10.22.0.6/24");
        let mut base = fixed_present();
        base.push(RuleInfo {
            handle: 9,
            comment: subnet_comment("n", &r.subnet()),
        });
        let ops = plan_add(std::slice::from_ref(&r), Some(&base), &mut |_| None);
        assert_eq!(ops.len(), 1);
        assert!(matches!(&ops[0], Op::AddElem { text, .. } if *text == r.ip().to_string()));
        // new subnet: one rule inserted after the last multicast return (handle 3)
        let r6 = rule("n", "c2", "fd00::6/64");
        let ops = render(&plan_add(
            std::slice::from_ref(&r6),
            Some(&base),
            &mut |_| None,
        ));
        assert!(
            ops[0].starts_with("add rule inet rcni postrouting position 3 ip6 saddr fd00::/64"),
            "{ops:?}"
        );
        assert_eq!(ops.len(), 2);
    }

    #[test]
    fn repeated_add_is_noop_and_stale_owner_is_replaced() {
        let r = rule("n", "c1", "10.22.0.5/24");
        let mut base = fixed_present();
        base.push(RuleInfo {
            handle: 9,
            comment: subnet_comment("n", &r.subnet()),
        });
        let same = Elem {
            key: r.ip(),
            comment: owner_comment("n", "c1", "eth0"),
        };
        assert!(
            plan_add(std::slice::from_ref(&r), Some(&base), &mut |_| Some(
                same.clone()
            ))
            .is_empty()
        );
        let stale = Elem {
            comment: owner_comment("n", "old", "eth0"),
            ..same
        };
        let ops = plan_add(std::slice::from_ref(&r), Some(&base), &mut |_| {
            Some(stale.clone())
        });
        assert!(matches!(ops[0], Op::DelElem { .. }));
        assert!(
            matches!(&ops[1], Op::AddElem { comment, .. } if tag_of_comment(comment) == owner_tag("n", "c1", "eth0"))
        );
    }

    #[test]
    fn damaged_chain_is_rebuilt_keeping_subnets() {
        let other = subnet_comment("m", &"10.33.0.0/24".parse().unwrap());
        let base = vec![RuleInfo {
            handle: 7,
            comment: other.clone(),
        }];
        let ops = render(&plan_add(
            &[rule("n", "c", "10.22.0.5/24")],
            Some(&base),
            &mut |_| None,
        ));
        assert!(ops.contains(&"flush chain inet rcni postrouting".to_string()));
        assert!(ops.iter().any(|o| o.contains(&other)));
        assert!(ops.iter().any(|o| o.contains("ip saddr 10.22.0.0/24")));
        assert!(ops.iter().any(|o| o.contains("rcni: masquerade6")));
    }

    fn elem(net: &str, cid: &str, ip: &str) -> Elem {
        Elem {
            key: ip.parse().unwrap(),
            comment: owner_comment(net, cid, "eth0"),
        }
    }

    fn base_with(subnets: &[(&str, &str)]) -> Vec<RuleInfo> {
        let mut b = fixed_present();
        for (i, (net, sub)) in subnets.iter().enumerate() {
            b.push(RuleInfo {
                handle: 100 + i as u64,
                comment: subnet_comment(net, &sub.parse().unwrap()),
            });
        }
        b
    }

    #[test]
    fn remove_keeps_subnet_rule_until_last_element() {
        let all = vec![
            elem("n", "c1", "10.22.0.5"),
            elem("n", "c2", "10.22.0.6"),
            elem("n", "c1", "fd00::5"),
        ];
        let base = base_with(&[
            ("n", "10.22.0.0/24"),
            ("n", "fd00::/64"),
            ("m", "fd00::/64"),
        ]);
        let ops = render(&plan_remove("n", &all, &base, &owned_by("n", "c1", "eth0")));
        assert_eq!(
            ops,
            vec![
                "delete element inet rcni masq4 { 10.22.0.5 }".to_string(),
                "delete element inet rcni masq6 { fd00::5 }".to_string(),
                "delete rule inet rcni postrouting handle 101".to_string(),
            ]
        );
        assert!(plan_remove("n", &all, &base, &owned_by("n", "nope", "eth0")).is_empty());
    }

    #[test]
    fn gc_only_touches_its_network() {
        let all = vec![
            elem("n", "c1", "10.22.0.5"),
            elem("n", "c2", "10.22.0.6"),
            elem("other", "c3", "10.33.0.6"),
        ];
        let base = base_with(&[("n", "10.22.0.0/24"), ("other", "10.33.0.0/24")]);
        let keep = vec![("c2".to_string(), "eth0".to_string())];
        let ops = render(&plan_remove("n", &all, &base, &stale_in("n", &keep)));
        assert_eq!(ops, vec!["delete element inet rcni masq4 { 10.22.0.5 }"]);
        let ops = render(&plan_remove("n", &all, &base, &stale_in("n", &[])));
        assert_eq!(ops.len(), 3);
        assert_eq!(ops[2], "delete rule inet rcni postrouting handle 100");
    }
}

#[cfg(test)]
mod encode_tests {
    use super::*;

    fn encode(ops: &[Op]) -> Result<nftnl::FinalizedBatch, Error> {
        crate::nft::batch::encode(ProtoFamily::Inet, ops)
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
