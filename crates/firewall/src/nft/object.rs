//! The nftables objects nftnl's safe wrappers lack, built over nftnl-sys in this one file so that
//! no feature touches a raw pointer:
//!
//! * [`Expr`] — any expression as a name plus attributes (nftnl wraps few expressions and always
//!   loads into register 1; concatenated keys need the 32-bit registers, `!= @set` needs the
//!   lookup's invert flag), with constructors for the ones our rules use.
//! * [`SetDef`] — a set or data map of any key/data type, created with NLM_F_CREATE (never
//!   NLM_F_EXCL, so racing plugin processes are safe).
//! * [`SetMsg`] — NEWSET, or NEWSETELEM / DELSETELEM carrying one element whose comment is
//!   element userdata (TLV NFTNL_UDATA_SET_ELEM_COMMENT, which `nft list` prints as
//!   `comment "…"`). Element adds use NLM_F_CREATE without NLM_F_EXCL and ask for no ACK (errors
//!   are still reported).
//! * The parsers of what the kernel sends back: [`parse_rule`], [`parse_elems`], [`parse_chain`].

use std::ffi::{c_void, CStr, CString};
use std::io;
use std::os::raw::c_char;
use std::ptr;

use nftnl::expr::Expression;
use nftnl::nftnl_sys as sys;
use nftnl::{MsgType, NlMsg, ProtoFamily, Rule};

use super::TABLE;
use crate::Error;

/// `s` as a C string; a NUL inside is rejected (it would silently truncate the name).
pub(crate) fn cstring(what: &'static str, s: &str) -> Result<CString, Error> {
    CString::new(s).map_err(|_| Error::Invalid {
        what,
        value: s.to_string(),
        reason: "contains NUL",
    })
}

/// Sets a comment on `rule`, naming the comment when nftnl refuses it.
pub(crate) fn set_rule_comment(rule: &mut Rule<'_>, comment: &str) -> Result<(), Error> {
    rule.set_comment(cstring("rule comment", comment)?)
        .map_err(|reason| Error::Invalid {
            what: "rule comment",
            value: comment.to_string(),
            reason,
        })
}

/// Register 1 (16 bytes) and the first 32-bit register (the ones concatenations use).
pub(crate) const R1: u32 = libc::NFT_REG_1 as u32;
/// Register 2 (the 16 bytes after register 1).
pub(crate) const R2: u32 = libc::NFT_REG_2 as u32;
/// First 32-bit register (`NFT_REG32_00`), aliasing register 1.
pub(crate) const R32: u32 = libc::NFT_REG32_00 as u32;
/// `cmp` operator `!=`.
pub(crate) const CMP_NEQ: u32 = 1;
/// `cmp` operator `==`.
pub(crate) const CMP_EQ: u32 = libc::NFT_CMP_EQ as u32;

/// A generic nftnl expression: name plus u32 / data / string attributes.
#[derive(Debug, Clone)]
pub(crate) struct Expr {
    name: &'static CStr,
    u32s: Vec<(u32, u32)>,
    data: Vec<(u32, Vec<u8>)>,
    strs: Vec<(u32, CString)>,
}

impl Expr {
    /// An expression of kind `name` (`c"payload"`, `c"cmp"`, …) with no attribute yet.
    pub(crate) fn new(name: &'static CStr) -> Expr {
        Expr {
            name,
            u32s: Vec::new(),
            data: Vec::new(),
            strs: Vec::new(),
        }
    }
    /// A u32 attribute.
    pub(crate) fn u(mut self, attr: u32, v: u32) -> Expr {
        self.u32s.push((attr, v));
        self
    }
    /// A data attribute.
    pub(crate) fn d(mut self, attr: u32, v: &[u8]) -> Expr {
        self.data.push((attr, v.to_vec()));
        self
    }
    /// A string attribute (callers pass names already validated; a NUL empties it).
    pub(crate) fn s(mut self, attr: u32, v: &str) -> Expr {
        self.strs.push((attr, CString::new(v).unwrap_or_default()));
        self
    }
}

impl Expression for Expr {
    fn to_expr(&self, _rule: &Rule) -> ptr::NonNull<sys::nftnl_expr> {
        // SAFETY: allocation result checked; libnftnl copies every attribute value.
        unsafe {
            let expr = sys::nftnl_expr_alloc(self.name.as_ptr());
            let Some(expr) = ptr::NonNull::new(expr) else {
                std::process::abort();
            };
            let e = expr.as_ptr();
            for (a, v) in &self.u32s {
                sys::nftnl_expr_set_u32(e, *a as u16, *v);
            }
            for (a, v) in &self.data {
                sys::nftnl_expr_set(e, *a as u16, v.as_ptr().cast(), v.len() as u32);
            }
            for (a, v) in &self.strs {
                sys::nftnl_expr_set_str(e, *a as u16, v.as_ptr());
            }
            expr
        }
    }
}

/// `meta <key>` into `dreg`.
pub(crate) fn meta(key: i32, dreg: u32) -> Expr {
    Expr::new(c"meta")
        .u(sys::NFTNL_EXPR_META_KEY, key as u32)
        .u(sys::NFTNL_EXPR_META_DREG, dreg)
}

/// Compares `sreg` with `data`.
pub(crate) fn cmp(op: u32, sreg: u32, data: &[u8]) -> Expr {
    Expr::new(c"cmp")
        .u(sys::NFTNL_EXPR_CMP_SREG, sreg)
        .u(sys::NFTNL_EXPR_CMP_OP, op)
        .d(sys::NFTNL_EXPR_CMP_DATA, data)
}

/// Loads `len` bytes at `offset` of header `base` into `dreg`.
pub(crate) fn payload(base: i32, offset: u32, len: u32, dreg: u32) -> Expr {
    Expr::new(c"payload")
        .u(sys::NFTNL_EXPR_PAYLOAD_BASE, base as u32)
        .u(sys::NFTNL_EXPR_PAYLOAD_OFFSET, offset)
        .u(sys::NFTNL_EXPR_PAYLOAD_LEN, len)
        .u(sys::NFTNL_EXPR_PAYLOAD_DREG, dreg)
}

/// `reg &= mask`.
pub(crate) fn bitwise_and(reg: u32, mask: &[u8]) -> Expr {
    let zero = vec![0u8; mask.len()];
    Expr::new(c"bitwise")
        .u(sys::NFTNL_EXPR_BITWISE_SREG, reg)
        .u(sys::NFTNL_EXPR_BITWISE_DREG, reg)
        .u(sys::NFTNL_EXPR_BITWISE_LEN, mask.len() as u32)
        .d(sys::NFTNL_EXPR_BITWISE_MASK, mask)
        .d(sys::NFTNL_EXPR_BITWISE_XOR, &zero)
}

/// `ct <key>` into `dreg`.
pub(crate) fn ct(key: i32, dreg: u32) -> Expr {
    Expr::new(c"ct")
        .u(sys::NFTNL_EXPR_CT_KEY, key as u32)
        .u(sys::NFTNL_EXPR_CT_DREG, dreg)
}

/// Lookup of the key in `sreg` in set `set` (by name and by the transaction id `id`, so it
/// also finds a set created earlier in the same batch). `dreg`: a map's data goes there;
/// `invert`: matches when the key is absent (`!= @set`).
pub(crate) fn lookup(set: &str, id: u32, sreg: u32, dreg: Option<u32>, invert: bool) -> Expr {
    let mut e = Expr::new(c"lookup")
        .u(sys::NFTNL_EXPR_LOOKUP_SREG, sreg)
        .s(sys::NFTNL_EXPR_LOOKUP_SET, set)
        .u(sys::NFTNL_EXPR_LOOKUP_SET_ID, id);
    if let Some(d) = dreg {
        e = e.u(sys::NFTNL_EXPR_LOOKUP_DREG, d);
    }
    if invert {
        e = e.u(sys::NFTNL_EXPR_LOOKUP_FLAGS, libc::NFT_LOOKUP_F_INV as u32);
    }
    e
}

/// `meta nfproto <fam>`: the rule applies to one IP family (our tables are `inet`).
pub(crate) fn nfproto(fam: crate::Family) -> [Expr; 2] {
    [
        meta(libc::NFT_META_NFPROTO, R1),
        cmp(CMP_EQ, R1, &[fam.nfproto()]),
    ]
}

/// `ip|ip6 saddr|daddr <net>` into register 1: load the address, mask it unless it is a host
/// prefix, compare.
pub(crate) fn prefix_match(net: &ipnet::IpNet, source: bool) -> Vec<Expr> {
    let (off, addr, mask) = match net {
        ipnet::IpNet::V4(n) => (
            if source { 12 } else { 16 },
            n.network().octets().to_vec(),
            n.netmask().octets().to_vec(),
        ),
        ipnet::IpNet::V6(n) => (
            if source { 8 } else { 24 },
            n.network().octets().to_vec(),
            n.netmask().octets().to_vec(),
        ),
    };
    let mut out = vec![payload(
        libc::NFT_PAYLOAD_NETWORK_HEADER,
        off,
        addr.len() as u32,
        R1,
    )];
    if net.prefix_len() != net.max_prefix_len() {
        out.push(bitwise_and(R1, &mask));
    }
    out.push(cmp(CMP_EQ, R1, &addr));
    out
}

/// `ip|ip6 saddr|daddr` (the whole address) into register 1.
pub(crate) fn addr_load(fam: crate::Family, source: bool) -> Expr {
    let (off, len) = match (fam, source) {
        (crate::Family::V4, true) => (12, 4),
        (crate::Family::V4, false) => (16, 4),
        (crate::Family::V6, true) => (8, 16),
        (crate::Family::V6, false) => (24, 16),
    };
    payload(libc::NFT_PAYLOAD_NETWORK_HEADER, off, len, R1)
}

/// Boxes expressions for a rule of [`super::batch::Op::AddRule`].
pub(crate) fn boxed<E: Expression + 'static>(
    exprs: impl IntoIterator<Item = E>,
) -> Vec<Box<dyn Expression>> {
    exprs
        .into_iter()
        .map(|e| Box::new(e) as Box<dyn Expression>)
        .collect()
}

/// `fib daddr type local`: the destination is an address of this host (the reference's
/// `--dst-type LOCAL`), in register 1.
pub(crate) fn daddr_is_local() -> [Expr; 2] {
    const NFT_FIB_RESULT_ADDRTYPE: u32 = 3;
    const NFTA_FIB_F_DADDR: u32 = 1 << 1;
    const RTN_LOCAL: u32 = 2;
    [
        Expr::new(c"fib")
            .u(sys::NFTNL_EXPR_FIB_FLAGS, NFTA_FIB_F_DADDR)
            .u(sys::NFTNL_EXPR_FIB_RESULT, NFT_FIB_RESULT_ADDRTYPE)
            .u(sys::NFTNL_EXPR_FIB_DREG, R1),
        cmp(CMP_EQ, R1, &RTN_LOCAL.to_ne_bytes()),
    ]
}

/// `dnat <fam> to` the address in `addr_reg` and the port in `port_reg`.
pub(crate) fn dnat(fam: crate::Family, addr_reg: u32, port_reg: u32) -> Expr {
    let nfproto = match fam {
        crate::Family::V4 => libc::NFPROTO_IPV4,
        crate::Family::V6 => libc::NFPROTO_IPV6,
    };
    Expr::new(c"nat")
        .u(sys::NFTNL_EXPR_NAT_TYPE, libc::NFT_NAT_DNAT as u32)
        .u(sys::NFTNL_EXPR_NAT_FAMILY, nfproto as u32)
        .u(sys::NFTNL_EXPR_NAT_REG_ADDR_MIN, addr_reg)
        .u(sys::NFTNL_EXPR_NAT_REG_PROTO_MIN, port_reg)
}

/// Data map flag of a set definition.
pub(crate) const NFT_SET_MAP: u32 = 0x8;

/// A set or data map of our table in `family`.
#[derive(Debug, Clone)]
pub(crate) struct SetDef<'a> {
    /// table family (`inet` or `bridge`)
    pub family: ProtoFamily,
    /// set name
    pub name: &'a str,
    /// transaction set id (ties a rule's lookup to a set created in the same batch)
    pub id: u32,
    /// nft datatype of the key (concatenations pack 6 bits a part)
    pub key_type: u32,
    /// key length in bytes
    pub key_len: u32,
    /// data type and length of a map; None for a plain set
    pub data: Option<(u32, u32)>,
    /// key byte order recorded in the set's userdata (nft needs it to print `ifname` keys)
    pub key_byteorder: Option<u32>,
    /// the key (and data) type as nft prints it: `ipv4_addr`, `inet_proto . inet_service : …`
    pub text: &'static str,
}

/// An owned `nftnl_set` naming one of our sets, carrying a definition or elements.
struct RawSet {
    ptr: *mut sys::nftnl_set,
}

impl RawSet {
    fn named(family: ProtoFamily, name: &str) -> Result<RawSet, Error> {
        let table = cstring("table name", TABLE)?;
        let name = cstring("set name", name)?;
        // SAFETY: allocation result checked; strings are copied by libnftnl.
        unsafe {
            let ptr = sys::nftnl_set_alloc();
            if ptr.is_null() {
                std::process::abort();
            }
            sys::nftnl_set_set_u32(ptr, sys::NFTNL_SET_FAMILY as u16, family as u32);
            sys::nftnl_set_set_str(ptr, sys::NFTNL_SET_TABLE as u16, table.as_ptr());
            sys::nftnl_set_set_str(ptr, sys::NFTNL_SET_NAME as u16, name.as_ptr());
            Ok(RawSet { ptr })
        }
    }

    fn add(&self, key: &[u8], data: &[u8], comment: Option<&str>) {
        // SAFETY: allocation checked; values are copied; the set takes ownership of `e`.
        unsafe {
            let e = sys::nftnl_set_elem_alloc();
            if e.is_null() {
                std::process::abort();
            }
            sys::nftnl_set_elem_set(
                e,
                sys::NFTNL_SET_ELEM_KEY as u16,
                key.as_ptr().cast(),
                key.len() as u32,
            );
            if !data.is_empty() {
                sys::nftnl_set_elem_set(
                    e,
                    sys::NFTNL_SET_ELEM_DATA as u16,
                    data.as_ptr().cast(),
                    data.len() as u32,
                );
            }
            if let Some(c) = comment {
                let u = comment_udata(c);
                sys::nftnl_set_elem_set(
                    e,
                    sys::NFTNL_SET_ELEM_USERDATA as u16,
                    u.as_ptr().cast(),
                    u.len() as u32,
                );
            }
            sys::nftnl_set_elem_add(self.ptr, e);
        }
    }
}

impl Drop for RawSet {
    fn drop(&mut self) {
        // SAFETY: we own the set (and through it its elements).
        unsafe { sys::nftnl_set_free(self.ptr) };
    }
}

/// One set message of a batch: a set definition, or one element to add or delete.
pub(crate) struct SetMsg {
    family: ProtoFamily,
    define: bool,
    set: RawSet,
}

impl SetMsg {
    /// NEWSET for `def` (create if absent).
    pub(crate) fn define(def: &SetDef<'_>) -> Result<SetMsg, Error> {
        let set = RawSet::named(def.family, def.name)?;
        let mut udata = Vec::new();
        if let Some(order) = def.key_byteorder {
            udata = vec![sys::NFTNL_UDATA_SET_KEYBYTEORDER as u8, 4];
            udata.extend(order.to_ne_bytes());
        }
        // SAFETY: set.ptr is a live set; libnftnl copies the data.
        unsafe {
            let p = set.ptr;
            sys::nftnl_set_set_u32(p, sys::NFTNL_SET_KEY_TYPE as u16, def.key_type);
            sys::nftnl_set_set_u32(p, sys::NFTNL_SET_KEY_LEN as u16, def.key_len);
            sys::nftnl_set_set_u32(p, sys::NFTNL_SET_ID as u16, def.id);
            match def.data {
                Some((ty, len)) => {
                    sys::nftnl_set_set_u32(p, sys::NFTNL_SET_FLAGS as u16, NFT_SET_MAP);
                    sys::nftnl_set_set_u32(p, sys::NFTNL_SET_DATA_TYPE as u16, ty);
                    sys::nftnl_set_set_u32(p, sys::NFTNL_SET_DATA_LEN as u16, len);
                }
                None => sys::nftnl_set_set_u32(p, sys::NFTNL_SET_FLAGS as u16, 0),
            }
            if !udata.is_empty() {
                sys::nftnl_set_set_data(
                    p,
                    sys::NFTNL_SET_USERDATA as u16,
                    udata.as_ptr().cast(),
                    udata.len() as u32,
                );
            }
        }
        Ok(SetMsg {
            family: def.family,
            define: true,
            set,
        })
    }

    /// One element of set `set`: `data` empty for a plain set or a delete, `comment` None for
    /// a delete or a keyed lookup.
    pub(crate) fn elem(
        family: ProtoFamily,
        set: &str,
        key: &[u8],
        data: &[u8],
        comment: Option<&str>,
    ) -> Result<SetMsg, Error> {
        let raw = RawSet::named(family, set)?;
        raw.add(key, data, comment);
        Ok(SetMsg {
            family,
            define: false,
            set: raw,
        })
    }

    /// Writes a GETSETELEM request for this message's element (`dump`: every element of the
    /// set instead) into `buf`.
    ///
    /// # Safety
    /// `buf` must point to 8 KiB of writable memory.
    pub(crate) unsafe fn write_get(&self, buf: *mut c_char, seq: u32, dump: bool) {
        let flags = if dump { libc::NLM_F_DUMP } else { 0 };
        // SAFETY: buf has 8 KiB (the caller's contract), far more than one element request
        // needs; the set is live for the call.
        unsafe {
            let nlh = sys::nftnl_nlmsg_build_hdr(
                buf,
                libc::NFT_MSG_GETSETELEM as u16,
                self.family as u16,
                flags as u16,
                seq,
            );
            sys::nftnl_set_elems_nlmsg_build_payload(nlh, self.set.ptr);
        }
    }
}

// SAFETY: a set definition or one element (key ≤28 bytes, data ≤20, ≤130 bytes of userdata)
// is far below nft_nlmsg_maxsize(), the room nftnl guarantees in `buf`.
unsafe impl NlMsg for SetMsg {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, msg_type: MsgType) {
        let (ty, flags) = match (self.define, msg_type) {
            (true, _) => (libc::NFT_MSG_NEWSET, libc::NLM_F_CREATE),
            (false, MsgType::Add) => (libc::NFT_MSG_NEWSETELEM, libc::NLM_F_CREATE),
            (false, MsgType::Del) => (libc::NFT_MSG_DELSETELEM, 0),
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
            if self.define {
                sys::nftnl_set_nlmsg_build_payload(nlh, self.set.ptr);
            } else {
                sys::nftnl_set_elems_nlmsg_build_payload(nlh, self.set.ptr);
            }
        }
    }
}

/// libnftnl userdata TLV: `[type u8][len u8][value]`, comment value NUL-terminated.
pub(crate) fn comment_udata(comment: &str) -> Vec<u8> {
    let mut v: Vec<u8> = comment.bytes().filter(|b| *b != 0).collect();
    v.truncate(crate::names::NFT_COMMENT_MAX - 1);
    v.push(0);
    let mut out = vec![sys::NFTNL_UDATA_SET_ELEM_COMMENT as u8, v.len() as u8];
    out.extend(v);
    out
}

/// Inverse of [`comment_udata`]; tolerant of other TLVs.
pub(crate) fn parse_comment_udata(mut data: &[u8]) -> Option<String> {
    while data.len() >= 2 {
        let (ty, len) = (data[0], data[1] as usize);
        let val = data.get(2..2 + len)?;
        // Rule and element comments share TLV type 0 (NFTNL_UDATA_{RULE,SET_ELEM}_COMMENT).
        if u32::from(ty) == sys::NFTNL_UDATA_SET_ELEM_COMMENT {
            let s = CStr::from_bytes_until_nul(val).ok()?;
            return Some(s.to_string_lossy().into_owned());
        }
        data = &data[2 + len..];
    }
    None
}

fn parse_err(what: &str) -> Error {
    Error::Netlink {
        op: format!("parse {what}"),
        source: io::Error::last_os_error(),
    }
}

/// A rule as read back: its kernel handle and its comment.
pub(crate) fn parse_rule(msg: &[u8]) -> Result<super::RuleInfo, Error> {
    // SAFETY: msg is a complete, 4-aligned netlink message inside our receive buffer; the rule
    // object is freed before returning and its data copied out first.
    unsafe {
        let r = sys::nftnl_rule_alloc();
        if r.is_null() {
            std::process::abort();
        }
        if sys::nftnl_rule_nlmsg_parse(msg.as_ptr().cast(), r) < 0 {
            sys::nftnl_rule_free(r);
            return Err(parse_err("rule"));
        }
        let handle = sys::nftnl_rule_get_u64(r, sys::NFTNL_RULE_HANDLE as u16);
        let mut ulen = 0u32;
        let up = sys::nftnl_rule_get_data(r, sys::NFTNL_RULE_USERDATA as u16, &mut ulen);
        let comment = if up.is_null() {
            String::new()
        } else {
            parse_comment_udata(std::slice::from_raw_parts(up.cast::<u8>(), ulen as usize))
                .unwrap_or_default()
        };
        sys::nftnl_rule_free(r);
        Ok(super::RuleInfo { handle, comment })
    }
}

/// One set element as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawElem {
    /// key bytes
    pub key: Vec<u8>,
    /// data bytes (maps; empty for a plain set)
    pub data: Vec<u8>,
    /// element comment
    pub comment: String,
}

/// The elements of one NEWSETELEM message.
pub(crate) fn parse_elems(msg: &[u8], out: &mut Vec<RawElem>) -> Result<(), Error> {
    // SAFETY: msg is a complete, 4-aligned netlink message inside our receive buffer; the
    // temporary set owns the parsed elements and is freed when `holder` drops.
    unsafe {
        let set = sys::nftnl_set_alloc();
        if set.is_null() {
            std::process::abort();
        }
        let holder = RawSet { ptr: set };
        if sys::nftnl_set_elems_nlmsg_parse(msg.as_ptr().cast(), holder.ptr) < 0 {
            return Err(parse_err("elements"));
        }
        let iter = sys::nftnl_set_elems_iter_create(holder.ptr);
        if iter.is_null() {
            std::process::abort();
        }
        let get = |e, attr: u32| -> Vec<u8> {
            let mut len = 0u32;
            let p = sys::nftnl_set_elem_get(e, attr as u16, &mut len);
            if p.is_null() {
                Vec::new()
            } else {
                std::slice::from_raw_parts(p.cast::<u8>(), len as usize).to_vec()
            }
        };
        let mut e = sys::nftnl_set_elems_iter_next(iter);
        while !e.is_null() {
            let key = get(e, sys::NFTNL_SET_ELEM_KEY);
            if !key.is_empty() {
                out.push(RawElem {
                    key,
                    data: get(e, sys::NFTNL_SET_ELEM_DATA),
                    comment: parse_comment_udata(&get(e, sys::NFTNL_SET_ELEM_USERDATA))
                        .unwrap_or_default(),
                });
            }
            e = sys::nftnl_set_elems_iter_next(iter);
        }
        sys::nftnl_set_elems_iter_destroy(iter);
    }
    Ok(())
}

/// A chain as read back (metadata only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChainInfo {
    /// NFPROTO_* of its table
    pub family: u32,
    /// table name
    pub table: String,
    /// chain name
    pub name: String,
    /// hook number and policy of a base chain
    pub base: Option<(u32, u32)>,
}

/// One NEWCHAIN message.
pub(crate) fn parse_chain(msg: &[u8]) -> Result<ChainInfo, Error> {
    // SAFETY: msg is a complete netlink message inside the receive buffer; the chain object
    // is freed before returning and its strings copied out first.
    unsafe {
        let c = sys::nftnl_chain_alloc();
        if c.is_null() {
            std::process::abort();
        }
        if sys::nftnl_chain_nlmsg_parse(msg.as_ptr().cast(), c) < 0 {
            sys::nftnl_chain_free(c);
            return Err(parse_err("chain"));
        }
        let text = |attr: u32| {
            let p = sys::nftnl_chain_get_str(c, attr as u16);
            if p.is_null() {
                String::new()
            } else {
                CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        };
        let base = (sys::nftnl_chain_is_set(c, sys::NFTNL_CHAIN_HOOKNUM as u16)
            && sys::nftnl_chain_is_set(c, sys::NFTNL_CHAIN_POLICY as u16))
        .then(|| {
            (
                sys::nftnl_chain_get_u32(c, sys::NFTNL_CHAIN_HOOKNUM as u16),
                sys::nftnl_chain_get_u32(c, sys::NFTNL_CHAIN_POLICY as u16),
            )
        });
        let info = ChainInfo {
            family: sys::nftnl_chain_get_u32(c, sys::NFTNL_CHAIN_FAMILY as u16),
            table: text(sys::NFTNL_CHAIN_TABLE),
            name: text(sys::NFTNL_CHAIN_NAME),
            base,
        };
        sys::nftnl_chain_free(c);
        Ok(info)
    }
}

/// Writes a dump request of message type `ty` (GETCHAIN, GETSET, …) of `family` (NFPROTO_UNSPEC:
/// every family) into `buf`: a bare header.
///
/// # Safety
/// `buf` must point to 8 KiB of writable memory.
pub(crate) unsafe fn write_dump_request(buf: *mut c_char, ty: i32, family: u16, seq: u32) {
    // SAFETY: buf has 8 KiB (the caller's contract); a dump request is a bare header.
    unsafe {
        sys::nftnl_nlmsg_build_hdr(buf, ty as u16, family, libc::NLM_F_DUMP as u16, seq);
    }
}

/// Writes a GETRULE dump request for one chain of our table into `buf`.
///
/// # Safety
/// `buf` must point to 8 KiB of writable memory.
pub(crate) unsafe fn write_rule_dump(
    buf: *mut c_char,
    family: ProtoFamily,
    chain: &CStr,
    seq: u32,
) -> Result<(), Error> {
    let table = cstring("table name", TABLE)?;
    // SAFETY: allocation checked; the rule is freed before returning; buf has 8 KiB.
    unsafe {
        let r = sys::nftnl_rule_alloc();
        if r.is_null() {
            std::process::abort();
        }
        sys::nftnl_rule_set_u32(r, sys::NFTNL_RULE_FAMILY as u16, family as u32);
        sys::nftnl_rule_set_str(r, sys::NFTNL_RULE_TABLE as u16, table.as_ptr());
        sys::nftnl_rule_set_str(r, sys::NFTNL_RULE_CHAIN as u16, chain.as_ptr());
        let nlh = sys::nftnl_nlmsg_build_hdr(
            buf,
            libc::NFT_MSG_GETRULE as u16,
            family as u16,
            libc::NLM_F_DUMP as u16,
            seq,
        );
        sys::nftnl_rule_nlmsg_build_payload(nlh, r);
        sys::nftnl_rule_free(r);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comment_udata_roundtrip() {
        let u = comment_udata("abc-def net: n");
        assert_eq!(u[0], 0);
        assert_eq!(u[1] as usize, "abc-def net: n".len() + 1);
        assert_eq!(parse_comment_udata(&u).as_deref(), Some("abc-def net: n"));
        let mut other = vec![1u8, 2, 9, 9];
        other.extend(&u);
        assert_eq!(
            parse_comment_udata(&other).as_deref(),
            Some("abc-def net: n")
        );
        assert_eq!(parse_comment_udata(&[0, 50, 1]), None);
    }
}
