//! Netlink transport to nf_tables: one `NETLINK_NETFILTER` socket per call, batches sent with
//! a single `sendmsg` (every page of the nftnl batch in one iovec array, because the kernel
//! needs begin..end in one skb), and the reads we need (one element by key, the base chain's
//! rules, one set's elements). Only objects of our own table are ever requested.
//!
//! nf_tables processes a batch synchronously inside `sendmsg`, so once it returns every error
//! is already queued on the socket: we drain it with `MSG_DONTWAIT` instead of counting ACKs
//! (whose presence for batch begin/end depends on the kernel version).

use std::ffi::{CStr, CString};
use std::io;
use std::net::IpAddr;
use std::os::raw::{c_char, c_void};

use nftnl::nftnl_sys as sys;
use nftnl::FinalizedBatch;

use super::plan::{Elem, Fam, RuleInfo, BASE_CHAIN, TABLE};
use crate::Error;

const NLMSG_HDRLEN: usize = 16;
const RCVBUF: usize = 8 << 20;

fn nl_err(op: &str, source: io::Error) -> Error {
    Error::Netlink {
        op: op.to_string(),
        source,
    }
}

/// An open nf_tables netlink socket.
pub(crate) struct Nl {
    sock: mnl::Socket,
    fd: i32,
    seq: u32,
    buf: Vec<u64>,
}

/// What a received message was.
enum Msg<'a> {
    /// NLMSG_ERROR with errno (0 = ack) and the seq it answers
    Ack(i32, u32),
    Done,
    Data(&'a [u8]),
}

impl Nl {
    pub(crate) fn open() -> Result<Nl, Error> {
        let sock = mnl::Socket::new(mnl::Bus::Netfilter).map_err(|e| nl_err("open socket", e))?;
        // SAFETY: the mnl socket pointer is valid for the life of `sock`.
        let fd = unsafe { mnl::mnl_sys::mnl_socket_get_fd(sock.as_raw_socket()) };
        let size = RCVBUF as libc::c_int;
        // A GC batch may be answered by many messages; a bigger buffer avoids ENOBUFS. Failure
        // only means the default size, which suffices for ordinary calls.
        // SAFETY: fd is open; the option value points to a live c_int of the given size.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        Ok(Nl {
            sock,
            fd,
            seq: std::process::id().wrapping_mul(7919),
            buf: vec![0u64; (nftnl::nft_nlmsg_maxsize() as usize).div_ceil(8) + 512],
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends a finalized batch and returns the first error the kernel reported.
    pub(crate) fn transact(&mut self, batch: &FinalizedBatch, what: &str) -> Result<(), Error> {
        self.transact_seq(batch, what).map_err(|(e, _)| e)
    }

    /// Like [`Nl::transact`], also giving the sequence number of the message the kernel rejected
    /// (0 when unknown) so the caller can name the failing operation.
    pub(crate) fn transact_seq(
        &mut self,
        batch: &FinalizedBatch,
        what: &str,
    ) -> Result<(), (Error, u32)> {
        let mut iov: Vec<libc::iovec> = batch
            .iter()
            .map(|page| libc::iovec {
                iov_base: page.as_ptr() as *mut c_void,
                iov_len: page.len(),
            })
            .collect();
        let mut addr: libc::sockaddr_nl = {
            // SAFETY: sockaddr_nl is plain data; all-zero is a valid value.
            unsafe { std::mem::zeroed() }
        };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: msghdr is plain data; all-zero is valid before we fill the fields.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = (&mut addr as *mut libc::sockaddr_nl).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_nl>() as u32;
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = iov.len();
        // SAFETY: msg points at live iovecs whose buffers are owned by `batch` for this call.
        let rc = unsafe { libc::sendmsg(self.fd, &msg, 0) };
        if rc < 0 {
            return Err((nl_err(what, io::Error::last_os_error()), 0));
        }
        let mut first_err: Option<(i32, u32)> = None;
        loop {
            let n = self.recv(libc::MSG_DONTWAIT);
            let n = match n {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err((nl_err(what, e), 0)),
            };
            self.for_each(n, &mut |m| {
                if let Msg::Ack(errno, seq) = m {
                    if errno != 0 && first_err.is_none() {
                        first_err = Some((errno, seq));
                    }
                }
                Ok(false)
            })
            .map_err(|e| (e, 0))?;
        }
        match first_err {
            Some((errno, seq)) => Err((nl_err(what, io::Error::from_raw_os_error(errno)), seq)),
            None => Ok(()),
        }
    }

    fn recv(&mut self, flags: i32) -> io::Result<usize> {
        let bytes = self.buf.len() * 8;
        // SAFETY: the buffer is owned, u64-aligned (nlmsghdr needs 4) and `bytes` long.
        let n = unsafe { libc::recv(self.fd, self.buf.as_mut_ptr().cast(), bytes, flags) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Walks the `n` received bytes; `f` returns true to stop early.
    fn for_each(
        &self,
        n: usize,
        f: &mut dyn FnMut(Msg<'_>) -> Result<bool, Error>,
    ) -> Result<bool, Error> {
        // SAFETY: reinterpreting the owned u64 buffer as bytes; `n` <= its byte length.
        let bytes = unsafe { std::slice::from_raw_parts(self.buf.as_ptr().cast::<u8>(), n) };
        let mut off = 0usize;
        while off + NLMSG_HDRLEN <= n {
            let len =
                u32::from_ne_bytes([bytes[off], bytes[off + 1], bytes[off + 2], bytes[off + 3]])
                    as usize;
            let ty = u16::from_ne_bytes([bytes[off + 4], bytes[off + 5]]);
            if len < NLMSG_HDRLEN || off + len > n {
                return Err(nl_err(
                    "parse reply",
                    io::Error::new(io::ErrorKind::InvalidData, "truncated netlink message"),
                ));
            }
            let m = &bytes[off..off + len];
            let msg = match ty as i32 {
                libc::NLMSG_ERROR if len >= NLMSG_HDRLEN + 4 => {
                    let errno = i32::from_ne_bytes([m[16], m[17], m[18], m[19]]);
                    let seq = if len >= NLMSG_HDRLEN + 4 + 12 {
                        u32::from_ne_bytes([m[28], m[29], m[30], m[31]])
                    } else {
                        0
                    };
                    Msg::Ack(-errno, seq)
                }
                libc::NLMSG_DONE => Msg::Done,
                libc::NLMSG_NOOP => {
                    off += (len + 3) & !3;
                    continue;
                }
                _ => Msg::Data(m),
            };
            if f(msg)? {
                return Ok(true);
            }
            off += (len + 3) & !3;
        }
        Ok(false)
    }

    /// Sends one request (built by `build` into a fresh buffer) and feeds every data reply to
    /// `on_data` until the dump ends or the single reply / error arrives. ENOENT => Ok(false).
    pub(crate) fn request(
        &mut self,
        what: &str,
        dump: bool,
        build: &dyn Fn(*mut c_char, u32),
        on_data: &mut dyn FnMut(&[u8]) -> Result<(), Error>,
    ) -> Result<bool, Error> {
        let seq = self.next_seq();
        let mut out = vec![0u64; 1024];
        build(out.as_mut_ptr().cast(), seq);
        // SAFETY: the builder wrote an nlmsghdr at the start of the u64-aligned buffer.
        let len = unsafe { (*(out.as_ptr().cast::<libc::nlmsghdr>())).nlmsg_len } as usize;
        // SAFETY: the message is `len` bytes long, inside the 8 KiB buffer.
        let bytes = unsafe { std::slice::from_raw_parts(out.as_ptr().cast::<u8>(), len) };
        self.sock.send(bytes).map_err(|e| nl_err(what, e))?;
        loop {
            let n = self.recv(0).map_err(|e| nl_err(what, e))?;
            let mut result: Option<Result<bool, Error>> = None;
            self.for_each(n, &mut |m| {
                match m {
                    Msg::Ack(0, s) if s == seq && !dump => result = Some(Ok(true)),
                    Msg::Ack(0, _) => {}
                    Msg::Ack(e, s) if s == seq || s == 0 => {
                        result = Some(if e == libc::ENOENT {
                            Ok(false)
                        } else {
                            Err(nl_err(what, io::Error::from_raw_os_error(e)))
                        });
                    }
                    Msg::Ack(..) => {}
                    Msg::Done => result = Some(Ok(true)),
                    Msg::Data(d) => {
                        on_data(d)?;
                        if !dump {
                            result = Some(Ok(true));
                        }
                    }
                }
                Ok(result.is_some())
            })?;
            if let Some(r) = result {
                return r;
            }
        }
    }

    /// The rules (handle + comment) of one chain of one of our tables; None when the table or
    /// chain does not exist. Every reader of our chains goes through here.
    pub(crate) fn dump_chain_rules(
        &mut self,
        family: nftnl::ProtoFamily,
        table: &str,
        chain: &str,
    ) -> Result<Option<Vec<RuleInfo>>, Error> {
        let table_c = CString::new(table).map_err(|_| Error::Invalid {
            what: "table name",
            value: table.to_string(),
            reason: "contains NUL",
        })?;
        let chain_c = CString::new(chain).map_err(|_| Error::Invalid {
            what: "chain name",
            value: chain.to_string(),
            reason: "contains NUL",
        })?;
        let mut found = Vec::new();
        let ok = self.request(
            &format!("list chain {table} {chain}"),
            true,
            &|buf, seq| {
                // SAFETY: allocation checked; the rule is freed before returning; buf has 8 KiB.
                unsafe {
                    let r = sys::nftnl_rule_alloc();
                    if r.is_null() {
                        std::process::abort();
                    }
                    sys::nftnl_rule_set_u32(r, sys::NFTNL_RULE_FAMILY as u16, family as u32);
                    sys::nftnl_rule_set_str(r, sys::NFTNL_RULE_TABLE as u16, table_c.as_ptr());
                    sys::nftnl_rule_set_str(r, sys::NFTNL_RULE_CHAIN as u16, chain_c.as_ptr());
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
            },
            &mut |d| parse_rule(d, &mut found),
        )?;
        Ok(ok.then_some(found))
    }

    /// GETSETELEM on `set`, a libnftnl set object that already names its table and set and, for
    /// a keyed lookup (`dump` false), carries the key: the kernel's O(1) lookup, or with `dump`
    /// every element. Replies go to `on_data`; Ok(false) when the table, set or element does
    /// not exist. Every element reader goes through here.
    pub(crate) fn request_set_elems(
        &mut self,
        what: &str,
        family: nftnl::ProtoFamily,
        set: *mut sys::nftnl_set,
        dump: bool,
        on_data: &mut dyn FnMut(&[u8]) -> Result<(), Error>,
    ) -> Result<bool, Error> {
        let flags = if dump { libc::NLM_F_DUMP } else { 0 };
        self.request(
            what,
            dump,
            &|buf, seq| {
                // SAFETY: buf has 8 KiB, far more than one element request needs; `set` is a
                // live libnftnl set owned by the caller for the duration of this call.
                unsafe {
                    let nlh = sys::nftnl_nlmsg_build_hdr(
                        buf,
                        libc::NFT_MSG_GETSETELEM as u16,
                        family as u16,
                        flags as u16,
                        seq,
                    );
                    sys::nftnl_set_elems_nlmsg_build_payload(nlh, set);
                }
            },
            on_data,
        )
    }

    /// The rules of our masquerade base chain; None when it does not exist. Its length grows
    /// with the number of subnets, never with containers. Our chain is never empty once
    /// created, so an empty dump also means "absent".
    pub(crate) fn dump_base_rules(&mut self) -> Result<Option<Vec<RuleInfo>>, Error> {
        Ok(self
            .dump_chain_rules(nftnl::ProtoFamily::Inet, TABLE, BASE_CHAIN)?
            .filter(|rules| !rules.is_empty()))
    }

    /// One element of a family's set by key (kernel keyed lookup, O(1)); None if absent or if
    /// the table/set does not exist yet.
    pub(crate) fn get_elem(&mut self, key: IpAddr) -> Result<Option<Elem>, Error> {
        let fam = Fam::of(key);
        let set = RawSet::new(fam);
        set.add_key(key);
        let mut found = Vec::new();
        let ok = self.request_set_elems(
            &format!("get element {} {key}", fam.set()),
            nftnl::ProtoFamily::Inet,
            set.ptr,
            false,
            &mut |d| parse_elems(d, &mut found),
        )?;
        Ok(if ok { found.into_iter().next() } else { None })
    }

    /// Every element of a family's set (DEL/GC only; ADD never dumps).
    pub(crate) fn dump_elems(&mut self, fam: Fam) -> Result<Vec<Elem>, Error> {
        let set = RawSet::new(fam);
        let mut found = Vec::new();
        self.request_set_elems(
            &format!("list set {}", fam.set()),
            nftnl::ProtoFamily::Inet,
            set.ptr,
            true,
            &mut |d| parse_elems(d, &mut found),
        )?;
        Ok(found)
    }
}

pub(crate) fn table_cstr() -> CString {
    CString::new(TABLE).unwrap_or_default()
}

/// An owned `nftnl_set` naming one of our sets, used to carry element lists.
pub(crate) struct RawSet {
    pub(crate) ptr: *mut sys::nftnl_set,
}

impl RawSet {
    pub(crate) fn new(fam: Fam) -> RawSet {
        // SAFETY: allocation result checked; strings are copied by libnftnl.
        unsafe {
            let ptr = sys::nftnl_set_alloc();
            if ptr.is_null() {
                std::process::abort();
            }
            let name = CString::new(fam.set()).unwrap_or_default();
            sys::nftnl_set_set_u32(
                ptr,
                sys::NFTNL_SET_FAMILY as u16,
                nftnl::ProtoFamily::Inet as u32,
            );
            sys::nftnl_set_set_str(ptr, sys::NFTNL_SET_TABLE as u16, table_cstr().as_ptr());
            sys::nftnl_set_set_str(ptr, sys::NFTNL_SET_NAME as u16, name.as_ptr());
            RawSet { ptr }
        }
    }

    /// Names any set of any table (the macspoofchk sets live in table `bridge rcni`).
    pub(crate) fn named(family: nftnl::ProtoFamily, table: &str, name: &str) -> RawSet {
        // SAFETY: allocation result checked; strings are copied by libnftnl.
        unsafe {
            let ptr = sys::nftnl_set_alloc();
            if ptr.is_null() {
                std::process::abort();
            }
            let table = CString::new(table).unwrap_or_default();
            let name = CString::new(name).unwrap_or_default();
            sys::nftnl_set_set_u32(ptr, sys::NFTNL_SET_FAMILY as u16, family as u32);
            sys::nftnl_set_set_str(ptr, sys::NFTNL_SET_TABLE as u16, table.as_ptr());
            sys::nftnl_set_set_str(ptr, sys::NFTNL_SET_NAME as u16, name.as_ptr());
            RawSet { ptr }
        }
    }

    fn new_elem(&self, key: IpAddr) -> *mut sys::nftnl_set_elem {
        let bytes: Vec<u8> = match key {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        self.new_raw_elem(&bytes)
    }

    fn new_raw_elem(&self, bytes: &[u8]) -> *mut sys::nftnl_set_elem {
        // SAFETY: allocation checked; key bytes are copied by libnftnl.
        unsafe {
            let e = sys::nftnl_set_elem_alloc();
            if e.is_null() {
                std::process::abort();
            }
            sys::nftnl_set_elem_set(
                e,
                sys::NFTNL_SET_ELEM_KEY as u16,
                bytes.as_ptr().cast(),
                bytes.len() as u32,
            );
            e
        }
    }

    /// Adds a key-only element (get/delete requests).
    pub(crate) fn add_key(&self, key: IpAddr) {
        let e = self.new_elem(key);
        // SAFETY: the set takes ownership of the element.
        unsafe { sys::nftnl_set_elem_add(self.ptr, e) };
    }

    /// Adds a key-only element whose key is already encoded (e.g. a concatenation).
    pub(crate) fn add_raw_key(&self, key: &[u8]) {
        let e = self.new_raw_elem(key);
        // SAFETY: the set takes ownership of the element.
        unsafe { sys::nftnl_set_elem_add(self.ptr, e) };
    }

    /// Adds an already encoded key with `comment` as its userdata (see
    /// [`RawSet::add_commented_elem`]).
    pub(crate) fn add_raw_commented(&self, key: &[u8], comment: &str) {
        let e = self.new_raw_elem(key);
        let udata = comment_udata(comment);
        // SAFETY: e is a live element; data is copied; the set takes ownership.
        unsafe {
            sys::nftnl_set_elem_set(
                e,
                sys::NFTNL_SET_ELEM_USERDATA as u16,
                udata.as_ptr().cast(),
                udata.len() as u32,
            );
            sys::nftnl_set_elem_add(self.ptr, e);
        }
    }

    /// Adds `key` with the comment as element userdata (TLV type
    /// NFTNL_UDATA_SET_ELEM_COMMENT, which `nft list` prints as `comment "…"`).
    pub(crate) fn add_commented_elem(&self, elem: &Elem) {
        let e = self.new_elem(elem.key);
        let udata = comment_udata(&elem.comment);
        // SAFETY: e is a live element; data is copied; the set takes ownership.
        unsafe {
            sys::nftnl_set_elem_set(
                e,
                sys::NFTNL_SET_ELEM_USERDATA as u16,
                udata.as_ptr().cast(),
                udata.len() as u32,
            );
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

/// Parses one NEWRULE message (handle and comment only).
pub(crate) fn parse_rule(msg: &[u8], out: &mut Vec<RuleInfo>) -> Result<(), Error> {
    // SAFETY: msg is a complete, 4-aligned netlink message inside our receive buffer; the rule
    // object is freed before returning and its data copied out first.
    unsafe {
        let r = sys::nftnl_rule_alloc();
        if r.is_null() {
            std::process::abort();
        }
        if sys::nftnl_rule_nlmsg_parse(msg.as_ptr().cast(), r) < 0 {
            sys::nftnl_rule_free(r);
            return Err(nl_err("parse rule", io::Error::last_os_error()));
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
        out.push(RuleInfo { handle, comment });
    }
    Ok(())
}

/// Parses one NEWSETELEM message into our element type.
fn parse_elems(msg: &[u8], out: &mut Vec<Elem>) -> Result<(), Error> {
    let mut raw = Vec::new();
    parse_raw_elems(msg, &mut raw)?;
    for (k, comment) in raw {
        let key = match k.len() {
            4 => IpAddr::from(<[u8; 4]>::try_from(k.as_slice()).unwrap_or_default()),
            16 => IpAddr::from(<[u8; 16]>::try_from(k.as_slice()).unwrap_or_default()),
            _ => continue,
        };
        out.push(Elem { key, comment });
    }
    Ok(())
}

/// Parses one NEWSETELEM message into (key bytes, comment) pairs, for sets whose keys are not
/// addresses (interface names, concatenations).
pub(crate) fn parse_raw_elems(msg: &[u8], out: &mut Vec<(Vec<u8>, String)>) -> Result<(), Error> {
    // SAFETY: msg is a complete, 4-aligned netlink message inside our receive buffer; the
    // temporary set owns the parsed elements and is freed when `holder` drops.
    unsafe {
        let set = sys::nftnl_set_alloc();
        if set.is_null() {
            std::process::abort();
        }
        let holder = RawSet { ptr: set };
        if sys::nftnl_set_elems_nlmsg_parse(msg.as_ptr().cast(), holder.ptr) < 0 {
            return Err(nl_err("parse elements", io::Error::last_os_error()));
        }
        let iter = sys::nftnl_set_elems_iter_create(holder.ptr);
        if iter.is_null() {
            std::process::abort();
        }
        let mut e = sys::nftnl_set_elems_iter_next(iter);
        while !e.is_null() {
            let mut klen = 0u32;
            let kp = sys::nftnl_set_elem_get(e, sys::NFTNL_SET_ELEM_KEY as u16, &mut klen);
            let key = if kp.is_null() {
                None
            } else {
                Some(std::slice::from_raw_parts(kp.cast::<u8>(), klen as usize).to_vec())
            };
            let mut ulen = 0u32;
            let up = sys::nftnl_set_elem_get(e, sys::NFTNL_SET_ELEM_USERDATA as u16, &mut ulen);
            let comment = if up.is_null() {
                String::new()
            } else {
                parse_comment_udata(std::slice::from_raw_parts(up.cast::<u8>(), ulen as usize))
                    .unwrap_or_default()
            };
            if let Some(key) = key {
                out.push((key, comment));
            }
            e = sys::nftnl_set_elems_iter_next(iter);
        }
        sys::nftnl_set_elems_iter_destroy(iter);
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
