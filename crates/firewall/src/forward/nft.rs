//! nftables side of the `firewall` plugin, in our table `inet rcni` (as `nft list` prints it):
//!
//! ```text
//! set fwd4 { type ipv4_addr; elements = { 10.88.0.5 comment "<owner tag> net: …, id: …, if: …" } }
//! set fwd6 { type ipv6_addr; … }
//! chain forward {
//!     type filter hook forward priority filter; policy accept;
//!     jump isolation1 comment "rcni: isolation"
//!     ip daddr @fwd4 ct state established,related accept comment "rcni: fwd4 related"
//!     ip saddr @fwd4 accept comment "rcni: fwd4 source"
//!     ip6 daddr @fwd6 ct state established,related accept comment "rcni: fwd6 related"
//!     ip6 saddr @fwd6 accept comment "rcni: fwd6 source"
//! }
//! chain isolation1 {            # per bridge with ingressPolicy same-bridge / isolated
//!     iifname "br" oifname != "br" jump isolation2 comment "rcni-iso1: br"
//!     iifname "br" oifname "br" drop comment "rcni-isolated: br"      # isolated only
//! }
//! chain isolation2 {
//!     oifname "br" drop comment "rcni-iso2: br"
//! }
//! ```
//!
//! Same semantics as the reference iptables layout (accept from the container, accept
//! established/related towards it; isolation stage 1/2). Per-container state is one element
//! per address with an owner comment, so ADD costs the same with 1 or 10 000 containers, and
//! DEL/GC find the addresses without prevResult. The only jump is the fixed one into
//! `isolation1` (per-bridge rules, not per container); no verdict maps (see [`crate::nft`]).
//!
//! nftables accepts are not final across base chains: when iptables' `FORWARD` policy is DROP
//! (Docker), [`NftForward`] additionally installs the reference-layout iptables rules through
//! the [`DropFallback`] the factory handed it (the iptables half) and says so in its notes;
//! DEL/GC remove them through the owner record.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::net::IpAddr;
use std::path::PathBuf;

use nftnl::expr::{Bitwise, Cmp, CmpOp, Conntrack, Expression, Meta, Verdict};
use nftnl::{ChainType, Hook, ProtoFamily};

use super::{validate_bridge, DropFallback, ForwardAttachment, ForwardFirewall, IngressPolicy};
use crate::names::{network_hash, owner_comment, owner_tag, tag_of_comment};
use crate::nft::batch::{add_addr, addr_set, del_addr, BaseChain, Body, Op};
use crate::nft::netlink::{family_kw, Nl};
use crate::nft::object::{addr_load, boxed, cmp, lookup, nfproto, CMP_EQ, CMP_NEQ, R1};
use crate::nft::{keep_err, Elem, RuleInfo, TABLE};
use crate::{lock, validate_owner, Error, Family, LOCK_PATH};

/// The filter base chain on the forward hook.
pub const FORWARD_CHAIN: &str = "forward";
/// Isolation stage 1 (regular chain).
pub const ISO1_CHAIN: &str = "isolation1";
/// Isolation stage 2 (regular chain).
pub const ISO2_CHAIN: &str = "isolation2";
/// Fixed rule comments of the base chain.
pub const FIXED_ISO_JUMP: &str = "rcni: isolation";
/// see [`FIXED_ISO_JUMP`]
pub const FIXED_REL4: &str = "rcni: fwd4 related";
/// see [`FIXED_ISO_JUMP`]
pub const FIXED_SRC4: &str = "rcni: fwd4 source";
/// see [`FIXED_ISO_JUMP`]
pub const FIXED_REL6: &str = "rcni: fwd6 related";
/// see [`FIXED_ISO_JUMP`]
pub const FIXED_SRC6: &str = "rcni: fwd6 source";

const FIXED: [&str; 5] = [
    FIXED_ISO_JUMP,
    FIXED_REL4,
    FIXED_SRC4,
    FIXED_REL6,
    FIXED_SRC6,
];

/// The address set of a family.
pub fn fwd_set(fam: Family) -> &'static str {
    match fam {
        Family::V4 => "fwd4",
        Family::V6 => "fwd6",
    }
}

/// Transaction set ids (distinct from the masquerade sets' 1 and 2).
fn set_id(fam: Family) -> u32 {
    match fam {
        Family::V4 => 11,
        Family::V6 => 12,
    }
}

/// `ip|ip6 saddr|daddr @fwd4|@fwd6`.
fn addr_in_set(fam: Family, source: bool) -> Vec<Box<dyn Expression>> {
    let mut e = boxed(nfproto(fam));
    e.extend(boxed([
        addr_load(fam, source),
        lookup(fwd_set(fam), set_id(fam), R1, None, false),
    ]));
    e
}

/// `iifname|oifname ==|!= "<name>"`: the name with its NUL, as nft compares it.
fn ifname_cmp(input: bool, name: &str, op: u32) -> Vec<Box<dyn Expression>> {
    let mut data = name.as_bytes().to_vec();
    data.push(0);
    vec![
        Box::new(if input { Meta::IifName } else { Meta::OifName }),
        Box::new(cmp(op, R1, &data)),
    ]
}

fn body(text: String, exprs: Vec<Box<dyn Expression>>) -> Body {
    Body { text, exprs }
}

/// `jump isolation1`
fn iso_jump() -> Body {
    let jump = Verdict::Jump {
        chain: CString::from(c"isolation1"),
    };
    body(format!("jump {ISO1_CHAIN}"), vec![Box::new(jump)])
}

/// `<fam> daddr @fwd<fam> ct state established,related accept`
fn related(fam: Family) -> Body {
    let mut r = addr_in_set(fam, false);
    r.push(Box::new(Conntrack::State));
    let bits = (nftnl::expr::States::ESTABLISHED | nftnl::expr::States::RELATED).bits();
    r.push(Box::new(Bitwise::new(bits, 0u32)));
    r.push(Box::new(Cmp::new(CmpOp::Neq, 0u32)));
    r.push(Box::new(Verdict::Accept));
    let text = format!(
        "{} daddr @{} ct state established,related accept",
        fam.kw(),
        fwd_set(fam)
    );
    body(text, r)
}

/// `<fam> saddr @fwd<fam> accept`
fn source(fam: Family) -> Body {
    let mut r = addr_in_set(fam, true);
    r.push(Box::new(Verdict::Accept));
    body(format!("{} saddr @{} accept", fam.kw(), fwd_set(fam)), r)
}

/// `iifname br oifname != br jump isolation2` (isolation1)
fn stage1(b: &str) -> Body {
    let mut r = ifname_cmp(true, b, CMP_EQ);
    r.extend(ifname_cmp(false, b, CMP_NEQ));
    r.push(Box::new(Verdict::Jump {
        chain: CString::from(c"isolation2"),
    }));
    body(
        format!("iifname \"{b}\" oifname != \"{b}\" jump {ISO2_CHAIN}"),
        r,
    )
}

/// `iifname br oifname br drop` (isolation1, isolated only)
fn same_drop(b: &str) -> Body {
    let mut r = ifname_cmp(true, b, CMP_EQ);
    r.extend(ifname_cmp(false, b, CMP_EQ));
    r.push(Box::new(Verdict::Drop));
    body(format!("iifname \"{b}\" oifname \"{b}\" drop"), r)
}

/// `oifname br drop` (isolation2)
fn stage2(b: &str) -> Body {
    let mut r = ifname_cmp(false, b, CMP_EQ);
    r.push(Box::new(Verdict::Drop));
    body(format!("oifname \"{b}\" drop"), r)
}

fn add_rule(chain: &'static str, rule: Body, comment: &str) -> Op {
    Op::AddRule {
        chain,
        rule,
        comment: comment.to_string(),
        after: None,
    }
}

fn add_elem(e: &Elem) -> Op {
    add_addr(fwd_set(e.fam()), e.key, &e.comment)
}

fn del_elem(key: IpAddr) -> Op {
    del_addr(fwd_set(Family::of(key)), key)
}

fn fixed_rules() -> Vec<Op> {
    let r = |rule, c: &str| add_rule(FORWARD_CHAIN, rule, c);
    vec![
        r(iso_jump(), FIXED_ISO_JUMP),
        r(related(Family::V4), FIXED_REL4),
        r(source(Family::V4), FIXED_SRC4),
        r(related(Family::V6), FIXED_REL6),
        r(source(Family::V6), FIXED_SRC6),
    ]
}

fn skeleton() -> Vec<Op> {
    let set = |fam| Op::AddSet(addr_set(ProtoFamily::Inet, fwd_set(fam), set_id(fam), fam));
    let chain = |name| Op::AddChain { name, base: None };
    vec![
        Op::AddTable,
        set(Family::V4),
        set(Family::V6),
        chain(ISO2_CHAIN),
        chain(ISO1_CHAIN),
        Op::AddChain {
            name: FORWARD_CHAIN,
            base: Some(BaseChain {
                hook: Hook::Forward,
                priority: 0,
                kind: ChainType::Filter,
                text: "filter hook forward priority filter",
            }),
        },
    ]
}

/// ADD plan: the skeleton when the base chain is absent or damaged, then only the elements
/// that are missing (an address held by a stale owner is taken over in the same transaction).
pub(crate) fn plan_add(
    att: &ForwardAttachment,
    base: Option<&[RuleInfo]>,
    existing: &mut dyn FnMut(IpAddr) -> Option<Elem>,
) -> Vec<Op> {
    let mut ops = Vec::new();
    let intact = base.is_some_and(|b| FIXED.iter().all(|c| b.iter().any(|r| r.comment == *c)));
    if !intact {
        ops.extend(skeleton());
        if base.is_some() {
            ops.push(Op::FlushChain(FORWARD_CHAIN));
        }
        ops.extend(fixed_rules());
    }
    let want_tag = owner_tag(&att.network, &att.container_id, &att.ifname);
    let mut seen = BTreeSet::new();
    for ip in &att.ips {
        if !seen.insert(*ip) {
            continue;
        }
        let want = Elem {
            key: *ip,
            comment: owner_comment(&att.network, &att.container_id, &att.ifname),
        };
        match existing(*ip) {
            Some(cur) if cur.tag() == want_tag => {}
            Some(_) => {
                ops.push(del_elem(*ip));
                ops.push(add_elem(&want));
            }
            None => ops.push(add_elem(&want)),
        }
    }
    ops
}

/// The isolation rules of a bridge: (chain, rule, comment).
pub(crate) fn isolation_rules(
    bridge: &str,
    policy: IngressPolicy,
) -> Vec<(&'static str, Body, String)> {
    let mut v = Vec::new();
    if policy == IngressPolicy::Open {
        return v;
    }
    v.push((ISO1_CHAIN, stage1(bridge), format!("rcni-iso1: {bridge}")));
    v.push((ISO2_CHAIN, stage2(bridge), format!("rcni-iso2: {bridge}")));
    if policy == IngressPolicy::Isolated {
        v.push((
            ISO1_CHAIN,
            same_drop(bridge),
            format!("rcni-isolated: {bridge}"),
        ));
    }
    v
}

/// Isolation plan: the rules of `bridge` not yet present (`iso1`/`iso2` hold the comments read
/// back; `skeleton` when our base chain does not exist yet).
pub(crate) fn plan_isolation(
    bridge: &str,
    policy: IngressPolicy,
    base_intact: bool,
    present: &[String],
) -> Vec<Op> {
    let mut ops = Vec::new();
    let rules = isolation_rules(bridge, policy);
    if rules.is_empty() {
        return ops;
    }
    if !base_intact {
        ops.extend(skeleton());
        ops.push(Op::FlushChain(FORWARD_CHAIN));
        ops.extend(fixed_rules());
    }
    for (chain, rule, comment) in rules {
        if !present.contains(&comment) {
            ops.push(add_rule(chain, rule, &comment));
        }
    }
    ops
}

/// Removal plan of a bridge's isolation rules: `rules` are (chain, rule) read back.
pub(crate) fn plan_del_isolation(bridge: &str, rules: &[(&'static str, RuleInfo)]) -> Vec<Op> {
    let ours = [
        format!("rcni-iso1: {bridge}"),
        format!("rcni-iso2: {bridge}"),
        format!("rcni-isolated: {bridge}"),
    ];
    rules
        .iter()
        .filter(|(_, r)| ours.contains(&r.comment))
        .map(|(chain, r)| Op::DelRule {
            chain,
            handle: r.handle,
        })
        .collect()
}

/// Elements to delete for DEL (`owner`) or GC (`stale`).
pub(crate) fn plan_remove(all: &[Elem], remove: &dyn Fn(&Elem) -> bool) -> Vec<Op> {
    all.iter()
        .filter(|e| remove(e))
        .map(|e| del_elem(e.key))
        .collect()
}

/// Rules (handle, comment) of one of our chains; None when it does not exist or is empty.
fn dump_rules(nl: &mut Nl, chain: &str) -> Result<Option<Vec<RuleInfo>>, Error> {
    nl.chain_rules(ProtoFamily::Inet, chain)
}

/// The rules of both isolation chains, with the chain each is in.
fn iso_rules(nl: &mut Nl) -> Result<Vec<(&'static str, RuleInfo)>, Error> {
    let mut rules = Vec::new();
    for chain in [ISO1_CHAIN, ISO2_CHAIN] {
        for r in dump_rules(nl, chain)?.unwrap_or_default() {
            rules.push((chain, r));
        }
    }
    Ok(rules)
}

/// Every element of both address sets (DEL, GC, listing).
fn all_elems(nl: &mut Nl) -> Result<Vec<Elem>, Error> {
    crate::nft::all_addr_elems(nl, fwd_set)
}

/// A base chain of another table on the IP forward hook whose policy is drop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropChain {
    /// nft family keyword (`ip`, `ip6`, `inet`)
    pub family: &'static str,
    /// table name
    pub table: String,
    /// chain name
    pub chain: String,
}

impl DropChain {
    /// iptables-nft's own `FORWARD` chain: handled by the iptables fallback rules.
    pub fn is_iptables_forward(&self) -> bool {
        matches!(self.family, "ip" | "ip6") && self.table == "filter" && self.chain == "FORWARD"
    }
}

/// Read-only listing of every nftables base chain on the IP forward hook with policy drop,
/// other than our own (chain metadata only; no rule of another table is read).
pub fn forward_drop_chains() -> Result<Vec<DropChain>, Error> {
    forward_drop_chains_in(&mut Nl::open()?)
}

fn forward_drop_chains_in(nl: &mut Nl) -> Result<Vec<DropChain>, Error> {
    Ok(nl
        .chains()?
        .into_iter()
        .filter_map(|c| {
            let family = family_kw(c.family).filter(|f| *f != "bridge")?;
            let drops = c.base == Some((libc::NF_INET_FORWARD as u32, libc::NF_DROP as u32));
            (drops && !(family == "inet" && c.table == TABLE)).then_some(DropChain {
                family,
                table: c.table,
                chain: c.name,
            })
        })
        .collect())
}

fn apply(nl: &mut Nl, ops: &[Op], what: &str) -> Result<(), Error> {
    crate::nft::apply(nl, ProtoFamily::Inet, ops, what)
}

/// Whether this namespace has a legacy (x_tables) `filter` table for `fam`: its names are
/// listed in /proc/net/ip{,6}_tables_names, which is per network namespace.
fn legacy_filter_present(fam: Family) -> bool {
    let path = match fam {
        Family::V4 => "/proc/net/ip_tables_names",
        Family::V6 => "/proc/net/ip6_tables_names",
    };
    std::fs::read_to_string(path).is_ok_and(|s| s.lines().any(|l| l.trim() == "filter"))
}

/// The nftables implementation of [`ForwardFirewall`].
pub(crate) struct NftForward {
    lock_path: PathBuf,
    ipt: Box<dyn DropFallback>,
}

impl NftForward {
    /// Uses [`LOCK_PATH`]; `fallback` installs accept rules where iptables' FORWARD policy
    /// drops (the factory passes the iptables half).
    pub(crate) fn new(fallback: Box<dyn DropFallback>) -> Self {
        Self {
            lock_path: PathBuf::from(LOCK_PATH),
            ipt: fallback,
        }
    }

    fn owned(nl: &mut Nl, tag: &str) -> Result<Vec<Elem>, Error> {
        Ok(all_elems(nl)?
            .into_iter()
            .filter(|e| e.tag() == tag)
            .collect())
    }
}

impl ForwardFirewall for NftForward {
    fn add_forward(&self, att: &ForwardAttachment) -> Result<Vec<String>, Error> {
        validate_owner(&att.network, &att.container_id, &att.ifname)?;
        if att.ips.is_empty() {
            return Ok(Vec::new());
        }
        let _guard = lock::lock(&self.lock_path)?;
        let mut nl = Nl::open()?;
        let base = dump_rules(&mut nl, FORWARD_CHAIN)?;
        let mut err = None;
        let ops = plan_add(att, base.as_deref(), &mut |ip| {
            keep_err(&mut err, crate::nft::addr_elem(&mut nl, fwd_set, ip))
        });
        err.map_or(Ok(()), Err)?;
        apply(&mut nl, &ops, "add forward accept")?;
        // An accept here is not final for other base chains on the hook: if iptables drops
        // by policy, its own accept rules are needed too (a Docker host: its FORWARD policy is DROP).
        // iptables-nft's FORWARD shows up in the (netlink, read-only) chain listing; only a
        // legacy (x_tables) filter table needs `iptables -S FORWARD` to be exec'd.
        let chains = forward_drop_chains_in(&mut nl).unwrap_or_default();
        let mut notes = Vec::new();
        let mut fallback: Vec<IpAddr> = Vec::new();
        for fam in [Family::V4, Family::V6] {
            let ips: Vec<IpAddr> = att
                .ips
                .iter()
                .copied()
                .filter(|ip| ip.is_ipv4() == (fam == Family::V4))
                .collect();
            if ips.is_empty() {
                continue;
            }
            let kw = fam.kw();
            let drops = chains
                .iter()
                .any(|c| c.is_iptables_forward() && c.family == kw)
                || (legacy_filter_present(fam) && self.ipt.policy_drops(fam));
            if drops {
                notes.push(format!(
                    "{} FORWARD policy is DROP: nftables accepts cannot override it, adding {} rules to chain {} for {}",
                    fam.prog(),
                    fam.prog(),
                    self.ipt.chain(),
                    ips.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
                ));
                fallback.extend(ips);
            }
        }
        // Drop policies of other nftables tables cannot be fixed from here (we never touch
        // other tables): say so, so the administrator knows where the traffic stops.
        for c in chains.iter().filter(|c| !c.is_iptables_forward()) {
            notes.push(format!(
                "nftables chain {} {} {} on the forward hook has policy drop: its own rules must accept this container's traffic",
                c.family, c.table, c.chain
            ));
        }
        if !fallback.is_empty() {
            self.ipt.add_locked(&ForwardAttachment {
                ips: fallback,
                ..att.clone()
            })?;
        } else if self
            .ipt
            .has_state(&att.network, &att.container_id, &att.ifname)
        {
            // iptables no longer drops (its table was flushed, or the policy changed): the
            // fallback rules of an earlier ADD are not needed, and a record of rules that are
            // gone would make every CHECK fail. Remove both.
            self.ipt
                .del_locked(&att.network, &att.container_id, &att.ifname, &[])?;
        }
        Ok(notes)
    }

    fn del_forward(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
        known_ips: &[IpAddr],
    ) -> Result<(), Error> {
        validate_owner(network, container_id, ifname)?;
        let _guard = lock::lock(&self.lock_path)?;
        let mut errors = Vec::new();
        let mut nl = Nl::open()?;
        let tag = owner_tag(network, container_id, ifname);
        match Self::owned(&mut nl, &tag) {
            Ok(owned) => {
                let ops = plan_remove(&owned, &|_| true);
                if let Err(e) = apply(&mut nl, &ops, "delete forward accept") {
                    errors.push(e);
                }
            }
            Err(e) => errors.push(e),
        }
        // Fallback iptables rules exist only where the owner record does.
        if self.ipt.has_state(network, container_id, ifname) {
            if let Err(e) = self
                .ipt
                .del_locked(network, container_id, ifname, known_ips)
            {
                errors.push(e);
            }
        }
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(Error::Multiple(errors)),
        }
    }

    fn check_forward(&self, att: &ForwardAttachment) -> Result<(), Error> {
        validate_owner(&att.network, &att.container_id, &att.ifname)?;
        let _guard = lock::lock(&self.lock_path)?;
        let mut nl = Nl::open()?;
        let base = dump_rules(&mut nl, FORWARD_CHAIN)?.ok_or_else(|| {
            Error::Missing(format!("chain inet {TABLE} {FORWARD_CHAIN} does not exist"))
        })?;
        for c in FIXED {
            if !base.iter().any(|r| r.comment == c) {
                return Err(Error::Missing(format!(
                    "rule \"{c}\" missing from chain inet {TABLE} {FORWARD_CHAIN}"
                )));
            }
        }
        let tag = owner_tag(&att.network, &att.container_id, &att.ifname);
        for ip in &att.ips {
            let fam = Family::of(*ip);
            match crate::nft::addr_elem(&mut nl, fwd_set, *ip)? {
                Some(e) if e.tag() == tag => {}
                Some(e) => {
                    return Err(Error::Missing(format!(
                        "element {ip} in set inet {TABLE} {} belongs to \"{}\"",
                        fwd_set(fam),
                        e.comment
                    )))
                }
                None => {
                    return Err(Error::Missing(format!(
                        "element {ip} not in set inet {TABLE} {}",
                        fwd_set(fam)
                    )))
                }
            }
        }
        if self
            .ipt
            .has_state(&att.network, &att.container_id, &att.ifname)
        {
            self.ipt.check_locked(att)?;
        }
        Ok(())
    }

    fn gc_forward(&self, network: &str, keep: &[(String, String)]) -> Result<(), Error> {
        let _guard = lock::lock(&self.lock_path)?;
        let mut errors = Vec::new();
        let prefix = format!("{}-", network_hash(network));
        let kept: BTreeSet<String> = keep.iter().map(|(c, i)| owner_tag(network, c, i)).collect();
        let mut nl = Nl::open()?;
        let all = all_elems(&mut nl)?;
        let ops = plan_remove(&all, &|e| {
            let t = tag_of_comment(&e.comment);
            t.starts_with(&prefix) && !kept.contains(t)
        });
        for chunk in ops.chunks(512) {
            if let Err(e) = apply(&mut nl, chunk, "garbage-collect forward accept") {
                errors.push(e);
            }
        }
        if let Err(e) = self.ipt.gc_locked(network, keep) {
            errors.push(e);
        }
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(Error::Multiple(errors)),
        }
    }

    fn add_isolation(
        &self,
        bridge: &str,
        policy: IngressPolicy,
        _v4: bool,
        _v6: bool,
    ) -> Result<(), Error> {
        if policy == IngressPolicy::Open {
            return Ok(());
        }
        validate_bridge(bridge)?;
        let _guard = lock::lock(&self.lock_path)?;
        let mut nl = Nl::open()?;
        let base = dump_rules(&mut nl, FORWARD_CHAIN)?;
        let intact = base
            .as_deref()
            .is_some_and(|b| FIXED.iter().all(|c| b.iter().any(|r| r.comment == *c)));
        let present: Vec<String> = iso_rules(&mut nl)?
            .into_iter()
            .map(|(_, r)| r.comment)
            .collect();
        let ops = plan_isolation(bridge, policy, intact, &present);
        apply(&mut nl, &ops, "add isolation")
    }

    fn del_isolation(&self, bridge: &str) -> Result<(), Error> {
        validate_bridge(bridge)?;
        let _guard = lock::lock(&self.lock_path)?;
        let mut nl = Nl::open()?;
        let ops = plan_del_isolation(bridge, &iso_rules(&mut nl)?);
        if ops.is_empty() {
            return Ok(());
        }
        apply(&mut nl, &ops, "delete isolation")
    }

    fn check_isolation(
        &self,
        bridge: &str,
        policy: IngressPolicy,
        _v4: bool,
        _v6: bool,
    ) -> Result<(), Error> {
        validate_bridge(bridge)?;
        let _guard = lock::lock(&self.lock_path)?;
        let mut nl = Nl::open()?;
        let present: Vec<String> = iso_rules(&mut nl)?
            .into_iter()
            .map(|(_, r)| r.comment)
            .collect();
        for (chain, rule, comment) in isolation_rules(bridge, policy) {
            if !present.contains(&comment) {
                return Err(Error::Missing(format!(
                    "chain inet {TABLE} {chain} lacks \"{}\"",
                    rule.text
                )));
            }
        }
        Ok(())
    }
}

/// Every element of the two address sets (read as DEL and GC read them) and every rule of our
/// three chains.
pub(crate) fn list(nl: &mut Nl) -> Result<Vec<crate::entry::Entry>, Error> {
    let mut out: Vec<_> = all_elems(nl)?
        .into_iter()
        .map(|e| {
            let set = fwd_set(e.fam());
            crate::nft::elem_entry(ProtoFamily::Inet, set, e.key.to_string(), &e.comment)
        })
        .collect();
    out.extend(crate::nft::rule_entries(
        nl,
        ProtoFamily::Inet,
        &[FORWARD_CHAIN, ISO1_CHAIN, ISO2_CHAIN],
    )?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(ops: &[Op]) -> Result<nftnl::FinalizedBatch, Error> {
        crate::nft::batch::encode(ProtoFamily::Inet, ops)
    }

    fn att(cid: &str, ips: &[&str]) -> ForwardAttachment {
        ForwardAttachment {
            network: "n".into(),
            container_id: cid.into(),
            ifname: "eth0".into(),
            ips: ips.iter().map(|i| i.parse().unwrap()).collect(),
        }
    }

    fn render(ops: &[Op]) -> Vec<String> {
        ops.iter()
            .map(|o| o.nft(ProtoFamily::Inet).to_string())
            .collect()
    }

    fn intact() -> Vec<RuleInfo> {
        FIXED
            .iter()
            .enumerate()
            .map(|(i, c)| RuleInfo {
                handle: i as u64 + 1,
                comment: c.to_string(),
            })
            .collect()
    }

    #[test]
    fn first_add_builds_table_then_steady_state_is_one_element() {
        let a = att("c1", &["10.88.0.5", "fd00::5"]);
        let ops = render(&plan_add(&a, None, &mut |_| None));
        assert_eq!(ops[0], "add table inet rcni");
        assert!(ops.contains(&"add chain inet rcni forward { type filter hook forward priority filter; policy accept; }".to_string()));
        assert!(ops.contains(&"add rule inet rcni forward ip daddr @fwd4 ct state established,related accept comment \"rcni: fwd4 related\"".to_string()));
        assert!(ops.contains(
            &"add rule inet rcni forward ip6 saddr @fwd6 accept comment \"rcni: fwd6 source\""
                .to_string()
        ));
        assert!(!ops.iter().any(|o| o.starts_with("flush")));
        assert_eq!(
            ops.iter().filter(|o| o.starts_with("add element")).count(),
            2
        );
        let base = intact();
        let b = att("c2", &["10.88.0.6"]);
        let ops = plan_add(&b, Some(&base), &mut |_| None);
        assert_eq!(ops.len(), 1, "{ops:?}");
        // repeated ADD: nothing; stale owner: replaced in one transaction
        let mine = Elem {
            key: "10.88.0.6".parse().unwrap(),
            comment: owner_comment("n", "c2", "eth0"),
        };
        assert!(plan_add(&b, Some(&base), &mut |_| Some(mine.clone())).is_empty());
        let stale = Elem {
            comment: owner_comment("n", "old", "eth0"),
            ..mine
        };
        let ops = plan_add(&b, Some(&base), &mut |_| Some(stale.clone()));
        assert!(matches!(
            ops.as_slice(),
            [Op::DelElem { .. }, Op::AddElem { .. }]
        ));
    }

    #[test]
    fn damaged_base_chain_is_rebuilt() {
        let mut base = intact();
        base.remove(2);
        let ops = render(&plan_add(
            &att("c", &["10.0.0.2"]),
            Some(&base),
            &mut |_| None,
        ));
        assert!(ops.contains(&"flush chain inet rcni forward".to_string()));
        assert_eq!(
            ops.iter()
                .filter(|o| o.contains("comment \"rcni: "))
                .count(),
            5
        );
    }

    #[test]
    fn isolation_removal_plan_takes_only_that_bridges_rules() {
        let r = |h, c: &str| RuleInfo {
            handle: h,
            comment: c.to_string(),
        };
        let rules = vec![
            (ISO1_CHAIN, r(1, "rcni-iso1: br0")),
            (ISO1_CHAIN, r(2, "rcni-iso1: br01")),
            (ISO1_CHAIN, r(3, "rcni-isolated: br0")),
            (ISO2_CHAIN, r(4, "rcni-iso2: br0")),
            (ISO2_CHAIN, r(5, "rcni-iso2: other")),
        ];
        assert_eq!(
            render(&plan_del_isolation("br0", &rules)),
            [
                "delete rule inet rcni isolation1 handle 1",
                "delete rule inet rcni isolation1 handle 3",
                "delete rule inet rcni isolation2 handle 4",
            ]
        );
        assert!(plan_del_isolation("nope", &rules).is_empty());
    }

    #[test]
    fn isolation_plans() {
        assert!(plan_isolation("br0", IngressPolicy::Open, true, &[]).is_empty());
        let ops = render(&plan_isolation("br0", IngressPolicy::Isolated, true, &[]));
        assert_eq!(
            ops,
            vec![
                "add rule inet rcni isolation1 iifname \"br0\" oifname != \"br0\" jump isolation2 comment \"rcni-iso1: br0\"",
                "add rule inet rcni isolation2 oifname \"br0\" drop comment \"rcni-iso2: br0\"",
                "add rule inet rcni isolation1 iifname \"br0\" oifname \"br0\" drop comment \"rcni-isolated: br0\"",
            ]
        );
        let present: Vec<String> = isolation_rules("br0", IngressPolicy::SameBridge)
            .into_iter()
            .map(|r| r.2)
            .collect();
        assert!(plan_isolation("br0", IngressPolicy::SameBridge, true, &present).is_empty());
        let ops = plan_isolation("br0", IngressPolicy::SameBridge, false, &present);
        assert!(matches!(ops[0], Op::AddTable));
    }

    #[test]
    fn remove_selects_by_owner() {
        let all = vec![
            Elem {
                key: "10.0.0.2".parse().unwrap(),
                comment: owner_comment("n", "c1", "eth0"),
            },
            Elem {
                key: "10.0.0.3".parse().unwrap(),
                comment: owner_comment("n", "c2", "eth0"),
            },
        ];
        let tag = owner_tag("n", "c1", "eth0");
        let ops = render(&plan_remove(&all, &|e| e.tag() == tag));
        assert_eq!(ops, vec!["delete element inet rcni fwd4 { 10.0.0.2 }"]);
    }

    #[test]
    fn encodes() {
        let mut ops = plan_add(&att("c", &["10.0.0.2", "fd00::2"]), None, &mut |_| None);
        ops.extend(plan_isolation("br0", IngressPolicy::Isolated, true, &[]));
        ops.push(del_elem("10.0.0.9".parse().unwrap()));
        let batch = encode(&ops).unwrap();
        let all: Vec<u8> = batch.iter().flat_map(|p| p.to_vec()).collect();
        let has = |needle: &[u8]| all.windows(needle.len()).any(|w| w == needle);
        assert!(has(b"fwd6\0"));
        assert!(has(b"isolation2\0"));
        assert!(has(b"rcni-isolated: br0\0"));
    }
}
