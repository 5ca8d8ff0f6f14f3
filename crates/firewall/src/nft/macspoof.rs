//! `macspoofchk` of the bridge plugin on nftables (cni-reference.md §2.2 step 7), in our own
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

use std::ffi::CString;
use std::fmt;
use std::path::Path;
use std::ptr;

use nftnl::expr::{Expression, Meta, Verdict};
use nftnl::nftnl_sys as sys;
use nftnl::set::{Set, SetKey};
use nftnl::{
    Batch, Chain, ChainType, FinalizedBatch, Hook, MsgType, Policy, ProtoFamily, Rule, Table,
};

use super::encode::{cstring, ElemMsg, SetLookup};
use super::netlink::{parse_raw_elems, Nl, RawSet};
use super::plan::RuleInfo;
use crate::macspoof::SpoofEntry;
use crate::names::{network_hash, owner_comment, owner_tag, tag_of_comment};
use crate::{lock, validate_owner, Error};

/// Our table, family `bridge`.
pub const TABLE: &str = "rcni";
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

/// Marker key types giving nftnl's named-set constructor our key types and lengths.
struct IfnameKey;
struct IfnameEtherKey;

impl SetKey for IfnameKey {
    const TYPE: u32 = TYPE_IFNAME;
    const LEN: u32 = IFNAMSIZ as u32;
    fn data(&self) -> Box<[u8]> {
        Box::new([0u8; IFNAMSIZ])
    }
}

impl SetKey for IfnameEtherKey {
    const TYPE: u32 = (TYPE_IFNAME << TYPE_BITS) | TYPE_ETHERADDR;
    const LEN: u32 = (IFNAMSIZ + 8) as u32;
    fn data(&self) -> Box<[u8]> {
        Box::new([0u8; IFNAMSIZ + 8])
    }
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

/// One message of a macspoofchk transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpoofOp {
    /// create table `bridge rcni` if absent
    AddTable,
    /// create both sets if absent
    AddSets,
    /// create the base chain if absent
    AddChain,
    /// delete every rule of the base chain (repair of a chain someone changed)
    FlushChain,
    /// append the one drop rule
    AddRule,
    /// protect a port
    AddPort {
        /// host veth
        veth: String,
        /// owner comment
        comment: String,
    },
    /// stop protecting a port
    DelPort(String),
    /// allow a source MAC on a port
    AddAllowed {
        /// host veth
        veth: String,
        /// container MAC
        mac: [u8; 6],
        /// owner comment
        comment: String,
    },
    /// remove an allowed pair
    DelAllowed {
        /// host veth
        veth: String,
        /// MAC
        mac: [u8; 6],
    },
}

/// nft-syntax rendering (for errors and tests).
impl fmt::Display for SpoofOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = format!("bridge {TABLE}");
        match self {
            SpoofOp::AddTable => write!(f, "add table {t}"),
            SpoofOp::AddSets => write!(
                f,
                "add set {t} {PORTS_SET} {{ type ifname; }}; add set {t} {ALLOWED_SET} {{ type ifname . ether_addr; }}"
            ),
            SpoofOp::AddChain => write!(
                f,
                "add chain {t} {CHAIN} {{ type filter hook prerouting priority {PRIORITY}; policy accept; }}"
            ),
            SpoofOp::FlushChain => write!(f, "flush chain {t} {CHAIN}"),
            SpoofOp::AddRule => write!(
                f,
                "add rule {t} {CHAIN} iifname @{PORTS_SET} iifname . ether saddr != @{ALLOWED_SET} drop comment \"{RULE_COMMENT}\""
            ),
            SpoofOp::AddPort { veth, comment } => write!(
                f,
                "add element {t} {PORTS_SET} {{ \"{veth}\" comment \"{comment}\" }}"
            ),
            SpoofOp::DelPort(veth) => write!(f, "delete element {t} {PORTS_SET} {{ \"{veth}\" }}"),
            SpoofOp::AddAllowed { veth, mac, comment } => write!(
                f,
                "add element {t} {ALLOWED_SET} {{ \"{veth}\" . {} comment \"{comment}\" }}",
                fmt_mac(mac)
            ),
            SpoofOp::DelAllowed { veth, mac } => write!(
                f,
                "delete element {t} {ALLOWED_SET} {{ \"{veth}\" . {} }}",
                fmt_mac(mac)
            ),
        }
    }
}

/// ADD. `rules` is the base chain as read back (None: table or chain absent); `port` and
/// `allowed` are the keyed lookups of this entry's two elements. Steady state: two element
/// adds, nothing else, whatever the number of containers.
pub fn plan_add(
    entry: &SpoofEntry,
    rules: Option<&[RuleInfo]>,
    port: Option<&PortElem>,
    allowed: Option<&AllowedElem>,
) -> Vec<SpoofOp> {
    let mut ops = Vec::new();
    let rules = rules.unwrap_or_default();
    if !rules.iter().any(|r| r.comment == RULE_COMMENT) {
        ops.extend([SpoofOp::AddTable, SpoofOp::AddSets, SpoofOp::AddChain]);
        if !rules.is_empty() {
            // The chain exists but holds something else: it is ours, rebuild it.
            ops.push(SpoofOp::FlushChain);
        }
        ops.push(SpoofOp::AddRule);
    }
    let comment = owner_comment(&entry.network, &entry.container_id, &entry.ifname);
    let tag = tag_of_comment(&comment).to_string();
    match port {
        Some(p) if tag_of_comment(&p.comment) == tag => {}
        other => {
            if other.is_some() {
                // A stale owner (missed DEL, veth name reused) holds the port: take it over.
                ops.push(SpoofOp::DelPort(entry.host_veth.clone()));
            }
            ops.push(SpoofOp::AddPort {
                veth: entry.host_veth.clone(),
                comment: comment.clone(),
            });
        }
    }
    match allowed {
        Some(a) if tag_of_comment(&a.comment) == tag => {}
        other => {
            if other.is_some() {
                ops.push(SpoofOp::DelAllowed {
                    veth: entry.host_veth.clone(),
                    mac: entry.mac,
                });
            }
            ops.push(SpoofOp::AddAllowed {
                veth: entry.host_veth.clone(),
                mac: entry.mac,
                comment,
            });
        }
    }
    ops
}

/// DEL/GC: delete the elements whose owner tag `remove` selects. Ports go first, so a chunked
/// GC never leaves a protected port without its allowed pair.
pub fn plan_remove(
    ports: &[PortElem],
    allowed: &[AllowedElem],
    remove: &dyn Fn(&str) -> bool,
) -> Vec<SpoofOp> {
    let mut ops = Vec::new();
    for p in ports {
        if remove(tag_of_comment(&p.comment)) {
            ops.push(SpoofOp::DelPort(p.veth.clone()));
        }
    }
    for a in allowed {
        if remove(tag_of_comment(&a.comment)) {
            ops.push(SpoofOp::DelAllowed {
                veth: a.veth.clone(),
                mac: a.mac,
            });
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

/// `payload load 6b @ link header + 6 => reg 2` (`ether saddr`, into the register after the
/// 16-byte iifname; nftnl's Payload always writes register 1).
struct EtherSaddrReg2;

impl Expression for EtherSaddrReg2 {
    fn to_expr(&self, _rule: &Rule) -> ptr::NonNull<sys::nftnl_expr> {
        // SAFETY: allocation result checked; only scalar attributes are set.
        unsafe {
            let Some(expr) = ptr::NonNull::new(sys::nftnl_expr_alloc(c"payload".as_ptr())) else {
                std::process::abort();
            };
            let e = expr.as_ptr();
            sys::nftnl_expr_set_u32(
                e,
                sys::NFTNL_EXPR_PAYLOAD_BASE as u16,
                libc::NFT_PAYLOAD_LL_HEADER as u32,
            );
            sys::nftnl_expr_set_u32(e, sys::NFTNL_EXPR_PAYLOAD_OFFSET as u16, 6);
            sys::nftnl_expr_set_u32(e, sys::NFTNL_EXPR_PAYLOAD_LEN as u16, 6);
            sys::nftnl_expr_set_u32(
                e,
                sys::NFTNL_EXPR_PAYLOAD_DREG as u16,
                libc::NFT_REG_2 as u32,
            );
            expr
        }
    }
}

/// `lookup reg 1 set <set> 0x1`: true when the key starting at register 1 is NOT in the set
/// (`!= @set`).
struct NotInSet {
    set: CString,
    id: u32,
}

impl Expression for NotInSet {
    fn to_expr(&self, _rule: &Rule) -> ptr::NonNull<sys::nftnl_expr> {
        // SAFETY: allocation result checked; the string is copied by libnftnl.
        unsafe {
            let Some(expr) = ptr::NonNull::new(sys::nftnl_expr_alloc(c"lookup".as_ptr())) else {
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
            sys::nftnl_expr_set_u32(
                e,
                sys::NFTNL_EXPR_LOOKUP_FLAGS as u16,
                libc::NFT_LOOKUP_F_INV as u32,
            );
            expr
        }
    }
}

/// A named set with the key byte order nft records in the set's userdata (TLV
/// NFTNL_UDATA_SET_KEYBYTEORDER), so `nft list` prints the elements as names and MACs.
fn add_set<K: SetKey>(
    batch: &mut Batch,
    table: &Table,
    name: &str,
    id: u32,
    byteorder: u32,
) -> Result<(), Error> {
    let cname = cstring("set name", name)?;
    let set: Set<'_, K> = Set::new_named(&cname, id, table, ProtoFamily::Bridge);
    let mut udata = vec![sys::NFTNL_UDATA_SET_KEYBYTEORDER as u8, 4];
    udata.extend(byteorder.to_ne_bytes());
    // SAFETY: the set pointer is live for `set`'s lifetime; libnftnl copies the data.
    unsafe {
        sys::nftnl_set_set_data(
            set.as_ptr().as_ptr(),
            sys::NFTNL_SET_USERDATA as u16,
            udata.as_ptr().cast(),
            udata.len() as u32,
        );
    }
    batch.add(&set, MsgType::Add);
    Ok(())
}

fn elem_msg(set: &str) -> ElemMsg {
    ElemMsg {
        set: RawSet::named(ProtoFamily::Bridge, TABLE, set),
        family: ProtoFamily::Bridge,
    }
}

/// Encodes `ops` in order into one transaction.
pub fn encode(ops: &[SpoofOp]) -> Result<FinalizedBatch, Error> {
    let tname = cstring("table name", TABLE)?;
    let table = Table::new(&tname, ProtoFamily::Bridge);
    let cname = cstring("chain name", CHAIN)?;
    let chain = Chain::new(&cname, &table);
    let mut batch = Batch::new();
    for op in ops {
        match op {
            SpoofOp::AddTable => batch.add(&table, MsgType::Add),
            SpoofOp::AddSets => {
                add_set::<IfnameKey>(&mut batch, &table, PORTS_SET, PORTS_ID, BYTEORDER_HOST)?;
                // nft records an invalid (0) byte order for a concatenation.
                add_set::<IfnameEtherKey>(&mut batch, &table, ALLOWED_SET, ALLOWED_ID, 0)?;
            }
            SpoofOp::AddChain => {
                let mut c = Chain::new(&cname, &table);
                c.set_hook(Hook::PreRouting, PRIORITY);
                c.set_type(ChainType::Filter);
                c.set_policy(Policy::Accept);
                batch.add(&c, MsgType::Add);
            }
            SpoofOp::FlushChain => batch.add(&Rule::new(&chain), MsgType::Del),
            SpoofOp::AddRule => {
                let mut rule = Rule::new(&chain);
                rule.add_expr(&Meta::IifName);
                rule.add_expr(&SetLookup::new(cstring("set name", PORTS_SET)?, PORTS_ID));
                rule.add_expr(&Meta::IifName);
                rule.add_expr(&EtherSaddrReg2);
                rule.add_expr(&NotInSet {
                    set: cstring("set name", ALLOWED_SET)?,
                    id: ALLOWED_ID,
                });
                rule.add_expr(&Verdict::Drop);
                rule.set_comment(cstring("rule comment", RULE_COMMENT)?)
                    .map_err(|reason| Error::Invalid {
                        what: "rule comment",
                        value: RULE_COMMENT.to_string(),
                        reason,
                    })?;
                batch.add(&rule, MsgType::Add);
            }
            SpoofOp::AddPort { veth, comment } => {
                let msg = elem_msg(PORTS_SET);
                msg.set.add_raw_commented(&port_key(veth), comment);
                batch.add(&msg, MsgType::Add);
            }
            SpoofOp::DelPort(veth) => {
                let msg = elem_msg(PORTS_SET);
                msg.set.add_raw_key(&port_key(veth));
                batch.add(&msg, MsgType::Del);
            }
            SpoofOp::AddAllowed { veth, mac, comment } => {
                let msg = elem_msg(ALLOWED_SET);
                msg.set.add_raw_commented(&allowed_key(veth, mac), comment);
                batch.add(&msg, MsgType::Add);
            }
            SpoofOp::DelAllowed { veth, mac } => {
                let msg = elem_msg(ALLOWED_SET);
                msg.set.add_raw_key(&allowed_key(veth, mac));
                batch.add(&msg, MsgType::Del);
            }
        }
    }
    Ok(batch.finalize())
}

/// Reads of our bridge table over the shared netlink socket type.
impl Nl {
    fn spoof_rules(&mut self) -> Result<Option<Vec<RuleInfo>>, Error> {
        self.dump_chain_rules(ProtoFamily::Bridge, TABLE, CHAIN)
    }

    /// Keyed lookup (`key` = None: dump the whole set). Absent table/set/element => empty.
    fn spoof_elems(
        &mut self,
        set: &'static str,
        key: Option<&[u8]>,
    ) -> Result<Vec<(Vec<u8>, String)>, Error> {
        let what = match key {
            Some(_) => format!("get element bridge {TABLE} {set}"),
            None => format!("list set bridge {TABLE} {set}"),
        };
        let raw = RawSet::named(ProtoFamily::Bridge, TABLE, set);
        if let Some(k) = key {
            raw.add_raw_key(k);
        }
        let mut found = Vec::new();
        let ok = self.request_set_elems(
            &what,
            ProtoFamily::Bridge,
            raw.ptr,
            key.is_none(),
            &mut |d| parse_raw_elems(d, &mut found),
        )?;
        Ok(if ok { found } else { Vec::new() })
    }

    fn spoof_ports(&mut self, key: Option<&str>) -> Result<Vec<PortElem>, Error> {
        let k = key.map(port_key);
        Ok(self
            .spoof_elems(PORTS_SET, k.as_ref().map(|k| k.as_slice()))?
            .into_iter()
            .filter_map(|(k, comment)| {
                Some(PortElem {
                    veth: parse_ifname(&k)?,
                    comment,
                })
            })
            .collect())
    }

    fn spoof_allowed(&mut self, key: Option<(&str, &[u8; 6])>) -> Result<Vec<AllowedElem>, Error> {
        let k = key.map(|(v, m)| allowed_key(v, m));
        Ok(self
            .spoof_elems(ALLOWED_SET, k.as_ref().map(|k| k.as_slice()))?
            .into_iter()
            .filter_map(|(k, comment)| {
                let (veth, mac) = parse_allowed(&k)?;
                Some(AllowedElem { veth, mac, comment })
            })
            .collect())
    }

    fn spoof_apply(&mut self, ops: &[SpoofOp], what: &str) -> Result<(), Error> {
        if ops.is_empty() {
            return Ok(());
        }
        let batch = encode(ops)?;
        self.transact_seq(&batch, what).map_err(|(err, seq)| {
            match super::failed_op(batch.sequence_numbers(), ops.len(), seq) {
                Some(i) => Error::Netlink {
                    op: format!("{what}: {}", ops[i]),
                    source: match err {
                        Error::Netlink { source, .. } => source,
                        other => std::io::Error::other(other.to_string()),
                    },
                },
                None => err,
            }
        })
    }
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

/// ADD (see [`crate::macspoof::add_macspoofchk`]).
pub(crate) fn add(lock_path: &Path, e: &SpoofEntry) -> Result<(), Error> {
    validate_entry(e)?;
    let _guard = lock::lock(lock_path)?;
    let mut nl = Nl::open()?;
    let rules = nl.spoof_rules()?;
    let port = nl.spoof_ports(Some(&e.host_veth))?;
    let allowed = nl.spoof_allowed(Some((&e.host_veth, &e.mac)))?;
    let ops = plan_add(e, rules.as_deref(), port.first(), allowed.first());
    nl.spoof_apply(&ops, "add macspoofchk")
}

/// DEL by owner.
pub(crate) fn del(
    lock_path: &Path,
    network: &str,
    container_id: &str,
    ifname: &str,
) -> Result<(), Error> {
    validate_owner(network, container_id, ifname)?;
    let _guard = lock::lock(lock_path)?;
    let mut nl = Nl::open()?;
    let ports = nl.spoof_ports(None)?;
    let allowed = nl.spoof_allowed(None)?;
    let ops = plan_remove(&ports, &allowed, &owned_by(network, container_id, ifname));
    nl.spoof_apply(&ops, "delete macspoofchk")
}

/// CHECK: the rule and both elements exist and belong to this attachment.
pub(crate) fn check(lock_path: &Path, e: &SpoofEntry) -> Result<(), Error> {
    validate_entry(e)?;
    let _guard = lock::lock(lock_path)?;
    let mut nl = Nl::open()?;
    let missing = |m: String| Err(Error::SpoofCheck(m));
    let rules = nl.spoof_rules()?.unwrap_or_default();
    if !rules.iter().any(|r| r.comment == RULE_COMMENT) {
        return missing(format!(
            "rule \"{RULE_COMMENT}\" missing from chain bridge {TABLE} {CHAIN}"
        ));
    }
    let tag = owner_tag(&e.network, &e.container_id, &e.ifname);
    let port = nl.spoof_ports(Some(&e.host_veth))?;
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
    let allowed = nl.spoof_allowed(Some((&e.host_veth, &e.mac)))?;
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
pub(crate) fn gc(lock_path: &Path, network: &str, keep: &[(String, String)]) -> Result<(), Error> {
    validate_owner(network, "gc", "gc")?;
    for (cid, ifname) in keep {
        validate_owner(network, cid, ifname)?;
    }
    let _guard = lock::lock(lock_path)?;
    let mut nl = Nl::open()?;
    let ports = nl.spoof_ports(None)?;
    let allowed = nl.spoof_allowed(None)?;
    let ops = plan_remove(&ports, &allowed, &stale_in(network, keep));
    for chunk in ops.chunks(512) {
        nl.spoof_apply(chunk, "garbage-collect macspoofchk")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(cid: &str, veth: &str, last: u8) -> SpoofEntry {
        SpoofEntry {
            network: "n".into(),
            container_id: cid.into(),
            ifname: "eth0".into(),
            host_veth: veth.into(),
            mac: [2, 0, 0, 0, 0, last],
        }
    }

    fn render(ops: &[SpoofOp]) -> Vec<String> {
        ops.iter().map(|o| o.to_string()).collect()
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
        assert_eq!(IfnameEtherKey::TYPE, 0xa49);
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
                "add set bridge rcni spoofchk_ports { type ifname; }; add set bridge rcni spoofchk_allowed { type ifname . ether_addr; }".into(),
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
        let ops = plan_add(&e, Some(&base), Some(&stale), Some(&a));
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[0], SpoofOp::DelPort("vethaaaa".into()));
        // A chain holding something else is rebuilt.
        let junk = [RuleInfo {
            handle: 9,
            comment: String::new(),
        }];
        assert!(plan_add(&e, Some(&junk), Some(&p), Some(&a)).contains(&SpoofOp::FlushChain));
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
