//! `macspoofchk` of the bridge plugin on nftables (as the reference bridge plugin offers it), in our own
//! table `bridge rcni` (the reference's `bridge nat` table is never touched).
//!
//! Layout (as `nft list table bridge rcni` prints it):
//!
//! ```text
//! table bridge rcni {
//!     set spoofchk_ports { type ifname
//!         elements = { "veth1a2b3c4d" comment "<nethash>-<ownerhash> net: n1, id: c1, if: eth0" } }
//!     set spoofchk_allowed { type ifname . ether_addr
//!         elements = { "veth1a2b3c4d" . 02:42:0a:16:00:05 comment "<nethash>-<ownerhash> …" } }
//!     chain prerouting {
//!         type filter hook prerouting priority dstnat; policy accept;
//!         iifname @spoofchk_ports iifname . ether saddr != @spoofchk_allowed drop comment "rcni: macspoofchk"
//!     }
//! }
//! ```
//!
//! The reference adds two chains and three rules per container and a jump per container in the
//! base chain, so every frame walks a list as long as the number of protected containers. Here
//! a protected port is one element in each of two hash sets and the chain holds one fixed rule:
//! the per-frame cost and the per-call transaction size do not depend on how many containers
//! exist. Elements carry the owner comment of [`crate::names::owner_comment`], so DEL (even
//! without a namespace) and GC find them without knowing the veth name or the MAC.
//!
//! Registers: `iifname` is 16 bytes and fills NFT_REG_1 (32-bit regs 00..03); `ether saddr`
//! goes into NFT_REG_2 (32-bit regs 04..07, 6 bytes used); the concatenated key is the two parts
//! each padded to 4 bytes: 16 + 8 = 24 bytes. This is exactly what `nft` generates for the
//! rule above, so `nft` lists it back in that form.

use std::path::{Path, PathBuf};

use nftnl::expr::{Expression, Meta, Verdict};
use nftnl::{ChainType, Hook, ProtoFamily};

use super::{MacSpoofCheck, SpoofEntry};
use crate::names::{network_hash, owner_comment, owner_tag, tag_of_comment};
use crate::nft::batch::{BaseChain, Body, Op};
use crate::nft::netlink::Nl;
use crate::nft::object::{boxed, lookup, payload, SetDef, R1, R2};
use crate::nft::{RuleInfo, TABLE};
use crate::{lock, validate_owner, Error};

/// Base chain: type filter, hook prerouting, priority -300 (as the reference), policy accept.
pub const CHAIN: &str = "prerouting";
/// Priority of [`CHAIN`] (nft prints it as `dstnat` in the bridge family).
pub const PRIORITY: i32 = -300;
/// Set of protected host veths (`type ifname`).
pub const PORTS_SET: &str = "spoofchk_ports";
/// Set of allowed (host veth, container source MAC) pairs (`type ifname . ether_addr`).
pub const ALLOWED_SET: &str = "spoofchk_allowed";
/// Comment of the one rule of [`CHAIN`].
pub const RULE_COMMENT: &str = "rcni: macspoofchk";

const IFNAMSIZ: usize = 16;
/// nftables datatype ids (nft's `enum datatypes`), stored as the set key type so `nft` can
/// print the elements; a concatenation packs them 6 bits each, first part highest.
const TYPE_ETHERADDR: u32 = 9;
const TYPE_IFNAME: u32 = 41;
const TYPE_BITS: u32 = 6;
/// nft's BYTEORDER_HOST_ENDIAN, the key byte order nft records for `ifname` sets.
const BYTEORDER_HOST: u32 = 1;
/// Transaction set ids tying the rule's lookups to sets created in the same batch.
const PORTS_ID: u32 = 1;
const ALLOWED_ID: u32 = 2;

/// Key of [`PORTS_SET`]: the interface name, NUL padded to IFNAMSIZ.
pub fn port_key(veth: &str) -> [u8; IFNAMSIZ] {
    let mut k = [0u8; IFNAMSIZ];
    let b = veth.as_bytes();
    let n = b.len().min(IFNAMSIZ - 1);
    k[..n].copy_from_slice(&b[..n]);
    k
}

/// Key of [`ALLOWED_SET`]: `ifname . ether_addr`, each part padded to a 4-byte multiple.
pub fn allowed_key(veth: &str, mac: &[u8; 6]) -> [u8; IFNAMSIZ + 8] {
    let mut k = [0u8; IFNAMSIZ + 8];
    k[..IFNAMSIZ].copy_from_slice(&port_key(veth));
    k[IFNAMSIZ..IFNAMSIZ + 6].copy_from_slice(mac);
    k
}

fn parse_ifname(k: &[u8]) -> Option<String> {
    let name = k.get(..IFNAMSIZ)?;
    let end = name.iter().position(|b| *b == 0).unwrap_or(IFNAMSIZ);
    Some(String::from_utf8_lossy(&name[..end]).into_owned())
}

fn parse_allowed(k: &[u8]) -> Option<(String, [u8; 6])> {
    let mac: [u8; 6] = k.get(IFNAMSIZ..IFNAMSIZ + 6)?.try_into().ok()?;
    Some((parse_ifname(k)?, mac))
}

fn fmt_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// An element of [`PORTS_SET`] as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortElem {
    /// host veth name
    pub veth: String,
    /// owner comment
    pub comment: String,
}

/// An element of [`ALLOWED_SET`] as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedElem {
    /// host veth name
    pub veth: String,
    /// allowed source MAC
    pub mac: [u8; 6],
    /// owner comment
    pub comment: String,
}

/// The skeleton: table, both sets, the base chain (and, to repair a chain someone changed,
/// a flush of it), then the one drop rule:
/// `iifname @spoofchk_ports iifname . ether saddr != @spoofchk_allowed drop`.
fn skeleton(flush: bool) -> Vec<Op> {
    let mut ops = vec![Op::AddTable];
    ops.extend(set_defs().into_iter().map(Op::AddSet));
    ops.push(Op::AddChain {
        name: CHAIN,
        base: Some(BaseChain {
            hook: Hook::PreRouting,
            priority: PRIORITY,
            kind: ChainType::Filter,
            text: "filter hook prerouting priority -300",
        }),
    });
    if flush {
        ops.push(Op::FlushChain(CHAIN));
    }
    let mut exprs: Vec<Box<dyn Expression>> = vec![Box::new(Meta::IifName)];
    exprs.extend(boxed([lookup(PORTS_SET, PORTS_ID, R1, None, false)]));
    exprs.push(Box::new(Meta::IifName));
    exprs.extend(boxed([
        // `ether saddr` into the register after the 16-byte iifname (nftnl's Payload
        // always writes register 1).
        payload(libc::NFT_PAYLOAD_LL_HEADER, 6, 6, R2),
        // `!= @spoofchk_allowed`: the key starting at register 1 is NOT in the set.
        lookup(ALLOWED_SET, ALLOWED_ID, R1, None, true),
    ]));
    exprs.push(Box::new(Verdict::Drop));
    ops.push(Op::AddRule {
        chain: CHAIN,
        rule: Body {
            text: format!("iifname @{PORTS_SET} iifname . ether saddr != @{ALLOWED_SET} drop"),
            exprs,
        },
        comment: RULE_COMMENT.to_string(),
        after: None,
    });
    ops
}

/// An element of [`PORTS_SET`] as nft prints it.
fn port_text(veth: &str) -> String {
    format!("\"{veth}\"")
}

/// An element of [`ALLOWED_SET`] as nft prints it.
fn allowed_text(veth: &str, mac: &[u8; 6]) -> String {
    format!("\"{veth}\" . {}", fmt_mac(mac))
}

/// Protects a port.
fn add_port(veth: &str, comment: &str) -> Op {
    Op::AddElem {
        set: PORTS_SET,
        key: port_key(veth).to_vec(),
        data: Vec::new(),
        comment: comment.to_string(),
        text: port_text(veth),
    }
}

/// Stops protecting a port.
fn del_port(veth: &str) -> Op {
    Op::DelElem {
        set: PORTS_SET,
        key: port_key(veth).to_vec(),
        text: port_text(veth),
    }
}

/// Allows a source MAC on a port.
fn add_allowed(veth: &str, mac: &[u8; 6], comment: &str) -> Op {
    Op::AddElem {
        set: ALLOWED_SET,
        key: allowed_key(veth, mac).to_vec(),
        data: Vec::new(),
        comment: comment.to_string(),
        text: allowed_text(veth, mac),
    }
}

/// Removes an allowed pair.
fn del_allowed(veth: &str, mac: &[u8; 6]) -> Op {
    Op::DelElem {
        set: ALLOWED_SET,
        key: allowed_key(veth, mac).to_vec(),
        text: allowed_text(veth, mac),
    }
}

/// ADD. `rules` is the base chain as read back (None: table or chain absent); `port` and
/// `allowed` are the keyed lookups of this entry's two elements. Steady state: two element
/// adds, nothing else, whatever the number of containers.
pub(crate) fn plan_add(
    entry: &SpoofEntry,
    rules: Option<&[RuleInfo]>,
    port: Option<&PortElem>,
    allowed: Option<&AllowedElem>,
) -> Vec<Op> {
    let mut ops = Vec::new();
    let rules = rules.unwrap_or_default();
    if !rules.iter().any(|r| r.comment == RULE_COMMENT) {
        // A chain that exists but holds something else is ours: rebuild it.
        ops.extend(skeleton(!rules.is_empty()));
    }
    let comment = owner_comment(&entry.network, &entry.container_id, &entry.ifname);
    let tag = tag_of_comment(&comment).to_string();
    match port {
        Some(p) if tag_of_comment(&p.comment) == tag => {}
        other => {
            if other.is_some() {
                // A stale owner (missed DEL, veth name reused) holds the port: take it over.
                ops.push(del_port(&entry.host_veth));
            }
            ops.push(add_port(&entry.host_veth, &comment));
        }
    }
    match allowed {
        Some(a) if tag_of_comment(&a.comment) == tag => {}
        other => {
            if other.is_some() {
                ops.push(del_allowed(&entry.host_veth, &entry.mac));
            }
            ops.push(add_allowed(&entry.host_veth, &entry.mac, &comment));
        }
    }
    ops
}

/// DEL/GC: delete the elements whose owner tag `remove` selects. Ports go first, so a chunked
/// GC never leaves a protected port without its allowed pair.
pub(crate) fn plan_remove(
    ports: &[PortElem],
    allowed: &[AllowedElem],
    remove: &dyn Fn(&str) -> bool,
) -> Vec<Op> {
    let mut ops = Vec::new();
    for p in ports {
        if remove(tag_of_comment(&p.comment)) {
            ops.push(del_port(&p.veth));
        }
    }
    for a in allowed {
        if remove(tag_of_comment(&a.comment)) {
            ops.push(del_allowed(&a.veth, &a.mac));
        }
    }
    ops
}

/// Owner tags of exactly this attachment.
pub fn owned_by(network: &str, container_id: &str, ifname: &str) -> impl Fn(&str) -> bool {
    let tag = owner_tag(network, container_id, ifname);
    move |t: &str| t == tag
}

/// Owner tags of `network` not in `keep` = (container id, ifname).
pub fn stale_in(network: &str, keep: &[(String, String)]) -> impl Fn(&str) -> bool {
    let prefix = format!("{}-", network_hash(network));
    let kept: Vec<String> = keep
        .iter()
        .map(|(cid, ifname)| owner_tag(network, cid, ifname))
        .collect();
    move |t: &str| t.starts_with(&prefix) && !kept.iter().any(|k| k == t)
}

/// The two sets: (definition, key byte order). nft records the host byte order for an
/// `ifname` key and an invalid (0) one for a concatenation; it needs them to print the keys as
/// names and MACs.
fn set_defs() -> [SetDef<'static>; 2] {
    let def = |name, id, key_type, key_len: usize, order, text| SetDef {
        family: ProtoFamily::Bridge,
        name,
        id,
        key_type,
        key_len: key_len as u32,
        data: None,
        key_byteorder: Some(order),
        text,
    };
    [
        def(
            PORTS_SET,
            PORTS_ID,
            TYPE_IFNAME,
            IFNAMSIZ,
            BYTEORDER_HOST,
            "ifname",
        ),
        def(
            ALLOWED_SET,
            ALLOWED_ID,
            (TYPE_IFNAME << TYPE_BITS) | TYPE_ETHERADDR,
            IFNAMSIZ + 8,
            0,
            "ifname . ether_addr",
        ),
    ]
}

fn spoof_rules(nl: &mut Nl) -> Result<Option<Vec<RuleInfo>>, Error> {
    nl.chain_rules(ProtoFamily::Bridge, CHAIN)
}

fn spoof_ports(nl: &mut Nl, key: Option<&str>) -> Result<Vec<PortElem>, Error> {
    let k = key.map(port_key);
    Ok(nl
        .set_elems(
            ProtoFamily::Bridge,
            PORTS_SET,
            k.as_ref().map(|k| k.as_slice()),
        )?
        .into_iter()
        .filter_map(|e| {
            Some(PortElem {
                veth: parse_ifname(&e.key)?,
                comment: e.comment,
            })
        })
        .collect())
}

fn spoof_allowed(nl: &mut Nl, key: Option<(&str, &[u8; 6])>) -> Result<Vec<AllowedElem>, Error> {
    let k = key.map(|(v, m)| allowed_key(v, m));
    Ok(nl
        .set_elems(
            ProtoFamily::Bridge,
            ALLOWED_SET,
            k.as_ref().map(|k| k.as_slice()),
        )?
        .into_iter()
        .filter_map(|e| {
            let (veth, mac) = parse_allowed(&e.key)?;
            Some(AllowedElem {
                veth,
                mac,
                comment: e.comment,
            })
        })
        .collect())
}

fn spoof_apply(nl: &mut Nl, ops: &[Op], what: &str) -> Result<(), Error> {
    crate::nft::apply(nl, ProtoFamily::Bridge, ops, what)
}

fn validate_entry(e: &SpoofEntry) -> Result<(), Error> {
    validate_owner(&e.network, &e.container_id, &e.ifname)?;
    let bad = |reason| Error::Invalid {
        what: "host veth name",
        value: e.host_veth.clone(),
        reason,
    };
    if e.host_veth.is_empty() {
        return Err(bad("must not be empty"));
    }
    if e.host_veth.len() >= IFNAMSIZ {
        return Err(bad("too long"));
    }
    if e.host_veth
        .bytes()
        .any(|b| b == 0 || b == b'"' || b.is_ascii_control())
    {
        return Err(bad("contains a NUL, quote or control character"));
    }
    Ok(())
}

/// The nftables implementation of [`MacSpoofCheck`] (the only one, as in the reference).
pub(crate) struct NftMacSpoof {
    lock_path: PathBuf,
}

impl NftMacSpoof {
    /// Uses [`crate::LOCK_PATH`].
    pub(crate) fn new() -> Self {
        Self {
            lock_path: PathBuf::from(crate::LOCK_PATH),
        }
    }
}

impl MacSpoofCheck for NftMacSpoof {
    fn add_macspoofchk(&self, e: &SpoofEntry) -> Result<(), Error> {
        add(&self.lock_path, e)
    }
    fn del_macspoofchk(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
    ) -> Result<(), Error> {
        del(&self.lock_path, network, container_id, ifname)
    }
    fn check_macspoofchk(&self, e: &SpoofEntry) -> Result<(), Error> {
        check(&self.lock_path, e)
    }
    fn gc_macspoofchk(&self, network: &str, keep: &[(String, String)]) -> Result<(), Error> {
        gc(&self.lock_path, network, keep)
    }
}

/// ADD: protects the port, taking over a port or pair still held by a stale owner.
fn add(lock_path: &Path, e: &SpoofEntry) -> Result<(), Error> {
    validate_entry(e)?;
    let _guard = lock::lock(lock_path)?;
    let mut nl = Nl::open()?;
    let rules = spoof_rules(&mut nl)?;
    let port = spoof_ports(&mut nl, Some(&e.host_veth))?;
    let allowed = spoof_allowed(&mut nl, Some((&e.host_veth, &e.mac)))?;
    let ops = plan_add(e, rules.as_deref(), port.first(), allowed.first());
    spoof_apply(&mut nl, &ops, "add macspoofchk")
}

/// DEL by owner.
fn del(lock_path: &Path, network: &str, container_id: &str, ifname: &str) -> Result<(), Error> {
    validate_owner(network, container_id, ifname)?;
    let _guard = lock::lock(lock_path)?;
    let mut nl = Nl::open()?;
    let ports = spoof_ports(&mut nl, None)?;
    let allowed = spoof_allowed(&mut nl, None)?;
    let ops = plan_remove(&ports, &allowed, &owned_by(network, container_id, ifname));
    spoof_apply(&mut nl, &ops, "delete macspoofchk")
}

/// CHECK: the rule and both elements exist and belong to this attachment.
fn check(lock_path: &Path, e: &SpoofEntry) -> Result<(), Error> {
    validate_entry(e)?;
    let _guard = lock::lock(lock_path)?;
    let mut nl = Nl::open()?;
    let missing = |m: String| Err(Error::SpoofCheck(m));
    let rules = spoof_rules(&mut nl)?.unwrap_or_default();
    if !rules.iter().any(|r| r.comment == RULE_COMMENT) {
        return missing(format!(
            "rule \"{RULE_COMMENT}\" missing from chain bridge {TABLE} {CHAIN}"
        ));
    }
    let tag = owner_tag(&e.network, &e.container_id, &e.ifname);
    let port = spoof_ports(&mut nl, Some(&e.host_veth))?;
    match port.first() {
        None => {
            return missing(format!(
                "port \"{}\" not in set bridge {TABLE} {PORTS_SET}",
                e.host_veth
            ))
        }
        Some(p) if tag_of_comment(&p.comment) != tag => {
            return missing(format!(
                "port \"{}\" in set bridge {TABLE} {PORTS_SET} belongs to \"{}\"",
                e.host_veth, p.comment
            ))
        }
        Some(_) => {}
    }
    let allowed = spoof_allowed(&mut nl, Some((&e.host_veth, &e.mac)))?;
    match allowed.first() {
        None => missing(format!(
            "\"{}\" . {} not in set bridge {TABLE} {ALLOWED_SET}",
            e.host_veth,
            fmt_mac(&e.mac)
        )),
        Some(a) if tag_of_comment(&a.comment) != tag => missing(format!(
            "\"{}\" . {} in set bridge {TABLE} {ALLOWED_SET} belongs to \"{}\"",
            e.host_veth,
            fmt_mac(&e.mac),
            a.comment
        )),
        Some(_) => Ok(()),
    }
}

/// GC: every element of `network` whose owner is not kept.
fn gc(lock_path: &Path, network: &str, keep: &[(String, String)]) -> Result<(), Error> {
    validate_owner(network, "gc", "gc")?;
    for (cid, ifname) in keep {
        validate_owner(network, cid, ifname)?;
    }
    let _guard = lock::lock(lock_path)?;
    let mut nl = Nl::open()?;
    let ports = spoof_ports(&mut nl, None)?;
    let allowed = spoof_allowed(&mut nl, None)?;
    let ops = plan_remove(&ports, &allowed, &stale_in(network, keep));
    for chunk in ops.chunks(512) {
        spoof_apply(&mut nl, chunk, "garbage-collect macspoofchk")?;
    }
    Ok(())
}

/// Every element of both sets and the rule of the chain, in table `bridge rcni`.
pub(crate) fn list(nl: &mut Nl) -> Result<Vec<crate::entry::Entry>, Error> {
    let entry =
        |set, text, comment: &str| crate::nft::elem_entry(ProtoFamily::Bridge, set, text, comment);
    let mut out = Vec::new();
    for p in spoof_ports(nl, None)? {
        out.push(entry(PORTS_SET, port_text(&p.veth), &p.comment));
    }
    for a in spoof_allowed(nl, None)? {
        out.push(entry(
            ALLOWED_SET,
            allowed_text(&a.veth, &a.mac),
            &a.comment,
        ));
    }
    out.extend(crate::nft::rule_entries(nl, ProtoFamily::Bridge, &[CHAIN])?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(ops: &[Op]) -> Result<nftnl::FinalizedBatch, Error> {
        crate::nft::batch::encode(ProtoFamily::Bridge, ops)
    }

    fn entry(cid: &str, veth: &str, last: u8) -> SpoofEntry {
        SpoofEntry {
            network: "n".into(),
            container_id: cid.into(),
            ifname: "eth0".into(),
            host_veth: veth.into(),
            mac: [2, 0, 0, 0, 0, last],
        }
    }

    fn render(ops: &[Op]) -> Vec<String> {
        ops.iter()
            .map(|o| o.nft(ProtoFamily::Bridge).to_string())
            .collect()
    }

    #[test]
    fn keys_are_padded_like_nft() {
        let k = allowed_key("vethaaaa", &[2, 0, 0, 0, 0, 1]);
        assert_eq!(&k[..8], b"vethaaaa");
        assert_eq!(&k[8..16], &[0u8; 8]);
        assert_eq!(&k[16..24], &[2, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!(
            parse_allowed(&k),
            Some(("vethaaaa".to_string(), [2, 0, 0, 0, 0, 1]))
        );
        assert_eq!(
            parse_ifname(&port_key("veth0123abcd")).unwrap(),
            "veth0123abcd"
        );
        assert_eq!(set_defs()[1].key_type, 0xa49);
    }

    #[test]
    fn first_add_builds_table_then_steady_state_is_two_elements() {
        let e = entry("c1", "vethaaaa", 1);
        let ops = render(&plan_add(&e, None, None, None));
        let c = owner_comment("n", "c1", "eth0");
        assert_eq!(
            ops,
            vec![
                "add table bridge rcni".to_string(),
                "add set bridge rcni spoofchk_ports { type ifname; }".into(),
                "add set bridge rcni spoofchk_allowed { type ifname . ether_addr; }".into(),
                "add chain bridge rcni prerouting { type filter hook prerouting priority -300; policy accept; }".into(),
                "add rule bridge rcni prerouting iifname @spoofchk_ports iifname . ether saddr != @spoofchk_allowed drop comment \"rcni: macspoofchk\"".into(),
                format!("add element bridge rcni spoofchk_ports {{ \"vethaaaa\" comment \"{c}\" }}"),
                format!("add element bridge rcni spoofchk_allowed {{ \"vethaaaa\" . 02:00:00:00:00:01 comment \"{c}\" }}"),
            ]
        );
        assert!(encode(&plan_add(&e, None, None, None)).is_ok());
        let base = [RuleInfo {
            handle: 4,
            comment: RULE_COMMENT.into(),
        }];
        assert_eq!(plan_add(&e, Some(&base), None, None).len(), 2);
        // Same owner already there: nothing to do.
        let p = PortElem {
            veth: "vethaaaa".into(),
            comment: c.clone(),
        };
        let a = AllowedElem {
            veth: "vethaaaa".into(),
            mac: e.mac,
            comment: c.clone(),
        };
        assert!(plan_add(&e, Some(&base), Some(&p), Some(&a)).is_empty());
        // Stale owner: delete then add, in the same transaction.
        let stale = PortElem {
            comment: owner_comment("n", "old", "eth0"),
            ..p.clone()
        };
        let ops = render(&plan_add(&e, Some(&base), Some(&stale), Some(&a)));
        assert_eq!(ops.len(), 2);
        assert_eq!(
            ops[0],
            "delete element bridge rcni spoofchk_ports { \"vethaaaa\" }"
        );
        // A chain holding something else is rebuilt.
        let junk = [RuleInfo {
            handle: 9,
            comment: String::new(),
        }];
        assert!(render(&plan_add(&e, Some(&junk), Some(&p), Some(&a)))
            .contains(&"flush chain bridge rcni prerouting".to_string()));
    }

    #[test]
    fn remove_selects_by_owner_and_gc_by_network() {
        let mk = |net: &str, cid: &str, veth: &str, last: u8| {
            (
                PortElem {
                    veth: veth.into(),
                    comment: owner_comment(net, cid, "eth0"),
                },
                AllowedElem {
                    veth: veth.into(),
                    mac: [2, 0, 0, 0, 0, last],
                    comment: owner_comment(net, cid, "eth0"),
                },
            )
        };
        let all = [
            mk("n", "c1", "veth1", 1),
            mk("n", "c2", "veth2", 2),
            mk("m", "c3", "veth3", 3),
        ];
        let ports: Vec<_> = all.iter().map(|x| x.0.clone()).collect();
        let allowed: Vec<_> = all.iter().map(|x| x.1.clone()).collect();
        let ops = render(&plan_remove(&ports, &allowed, &owned_by("n", "c1", "eth0")));
        assert_eq!(
            ops,
            vec![
                "delete element bridge rcni spoofchk_ports { \"veth1\" }".to_string(),
                "delete element bridge rcni spoofchk_allowed { \"veth1\" . 02:00:00:00:00:01 }"
                    .into(),
            ]
        );
        let keep = [("c2".to_string(), "eth0".to_string())];
        assert_eq!(
            plan_remove(&ports, &allowed, &stale_in("n", &keep)).len(),
            2
        );
        assert_eq!(plan_remove(&ports, &allowed, &stale_in("n", &[])).len(), 4);
        let rm = plan_remove(&ports, &allowed, &stale_in("n", &[]));
        assert!(encode(&rm).is_ok());
    }

    #[test]
    fn entry_validation() {
        assert!(validate_entry(&entry("c", "veth0", 1)).is_ok());
        assert!(validate_entry(&entry("c", "", 1)).is_err());
        assert!(validate_entry(&entry("c", "veth0123456789ab", 1)).is_err());
        assert!(validate_entry(&entry("", "veth0", 1)).is_err());
    }
}
