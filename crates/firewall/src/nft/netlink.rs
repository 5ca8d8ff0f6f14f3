//! Netlink transport to nf_tables: one `NETLINK_NETFILTER` socket per call (netlink-sys, the
//! transport of the kernel crate's rtnetlink and conntrack clients too), batches sent with a
//! single `send` (every page of the nftnl batch in one buffer, because the kernel needs
//! begin..end in one skb), and the reads we need (one element by key, the base chain's
//! rules, one set's elements). Only objects of our own table are ever requested.
//!
//! nf_tables processes a batch synchronously inside `send`, so once it returns every error
//! is already queued on the socket: we drain it with `MSG_DONTWAIT` instead of counting ACKs
//! (whose presence for batch begin/end depends on the kernel version).

use std::io;
use std::os::fd::AsRawFd;
use std::os::raw::c_char;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};
use nftnl::{FinalizedBatch, ProtoFamily};

use super::object::{
    cstring, parse_chain, parse_elems, parse_rule, write_dump_request, write_rule_dump, ChainInfo,
    RawElem, SetMsg,
};
use super::{RuleInfo, TABLE};
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
    sock: Socket,
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
        let mut sock = Socket::new(NETLINK_NETFILTER).map_err(|e| nl_err("open socket", e))?;
        sock.bind_auto().map_err(|e| nl_err("bind socket", e))?;
        // Port 0 = the kernel: plain `send`s go there.
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(|e| nl_err("connect socket", e))?;
        let size = RCVBUF as libc::c_int;
        // A GC batch may be answered by many messages; a bigger buffer avoids ENOBUFS. Failure
        // only means the default size, which suffices for ordinary calls. (netlink-sys sets
        // SO_RCVBUF, which rmem_max caps; SO_RCVBUFFORCE is not capped for CAP_NET_ADMIN.)
        // SAFETY: the fd is open; the option value points to a live c_int of the given size.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        Ok(Nl {
            sock,
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
        // The kernel needs batch begin..end in one message (one skb): nftnl hands the batch
        // over in pages, which go out as one buffer.
        let bytes: Vec<u8> = batch.iter().flat_map(|page| page.iter().copied()).collect();
        if let Err(e) = self.sock.send(&bytes, 0) {
            return Err((nl_err(what, e), 0));
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
        let len = self.buf.len() * 8;
        // SAFETY: the buffer is owned and `len` bytes long; it is u64-aligned because libnftnl's
        // parsers need 4-aligned netlink headers, hence the byte view.
        let mut bytes =
            unsafe { std::slice::from_raw_parts_mut(self.buf.as_mut_ptr().cast::<u8>(), len) };
        let n = self.sock.recv(&mut bytes, flags)?;
        // MSG_TRUNC aside, recv never reports more than the buffer holds.
        Ok(n.min(len))
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
        build: &mut dyn FnMut(*mut c_char, u32),
        on_data: &mut dyn FnMut(&[u8]) -> Result<(), Error>,
    ) -> Result<bool, Error> {
        let seq = self.next_seq();
        let mut out = vec![0u64; 1024];
        build(out.as_mut_ptr().cast(), seq);
        // SAFETY: the builder wrote an nlmsghdr at the start of the u64-aligned buffer.
        let len = unsafe { (*(out.as_ptr().cast::<libc::nlmsghdr>())).nlmsg_len } as usize;
        // SAFETY: the message is `len` bytes long, inside the 8 KiB buffer.
        let bytes = unsafe { std::slice::from_raw_parts(out.as_ptr().cast::<u8>(), len) };
        self.sock.send(bytes, 0).map_err(|e| nl_err(what, e))?;
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
    /// chain does not exist, or (our chains are never empty once created) when it is empty.
    /// Every reader of our chains goes through here.
    pub(crate) fn chain_rules(
        &mut self,
        family: ProtoFamily,
        chain: &str,
    ) -> Result<Option<Vec<RuleInfo>>, Error> {
        let chain_c = cstring("chain name", chain)?;
        let mut found = Vec::new();
        let mut build_err = None;
        let ok = self.request(
            &format!(
                "list chain {} {TABLE} {chain}",
                family_kw(family as u32).unwrap_or("?")
            ),
            true,
            &mut |buf, seq| {
                // SAFETY: `request` hands us its 8 KiB buffer.
                if let Err(e) = unsafe { write_rule_dump(buf, family, &chain_c, seq) } {
                    build_err = Some(e);
                }
            },
            &mut |d| {
                found.push(parse_rule(d)?);
                Ok(())
            },
        )?;
        if let Some(e) = build_err {
            return Err(e);
        }
        Ok((ok && !found.is_empty()).then_some(found))
    }

    /// Elements of one of our sets: the one with `key` (the kernel's keyed lookup, O(1)), or
    /// with `key` None every element. A missing table, set or element gives an empty list.
    /// Every element reader goes through here.
    pub(crate) fn set_elems(
        &mut self,
        family: ProtoFamily,
        set: &str,
        key: Option<&[u8]>,
    ) -> Result<Vec<RawElem>, Error> {
        let fam = family_kw(family as u32).unwrap_or("?");
        let what = match key {
            Some(_) => format!("get element {fam} {TABLE} {set}"),
            None => format!("list set {fam} {TABLE} {set}"),
        };
        let msg = SetMsg::elem(family, set, key.unwrap_or(&[]), &[], None)?;
        let dump = key.is_none();
        let mut found = Vec::new();
        let ok = self.request(
            &what,
            dump,
            &mut |buf, seq| {
                // SAFETY: `request` hands us its 8 KiB buffer.
                unsafe { msg.write_get(buf, seq, dump) }
            },
            &mut |d| parse_elems(d, &mut found),
        )?;
        Ok(if ok { found } else { Vec::new() })
    }

    /// Every chain of every table (metadata only: no rule of another table is read).
    pub(crate) fn chains(&mut self) -> Result<Vec<ChainInfo>, Error> {
        let mut found = Vec::new();
        self.request(
            "list chains",
            true,
            &mut |buf, seq| {
                // SAFETY: `request` hands us its 8 KiB buffer.
                unsafe {
                    write_dump_request(
                        buf,
                        libc::NFT_MSG_GETCHAIN,
                        libc::NFPROTO_UNSPEC as u16,
                        seq,
                    )
                }
            },
            &mut |d| {
                found.push(parse_chain(d)?);
                Ok(())
            },
        )?;
        Ok(found)
    }
}

/// nft keyword of an NFPROTO_* table family.
pub(crate) fn family_kw(f: u32) -> Option<&'static str> {
    match f as i32 {
        libc::NFPROTO_IPV4 => Some("ip"),
        libc::NFPROTO_IPV6 => Some("ip6"),
        libc::NFPROTO_INET => Some("inet"),
        libc::NFPROTO_BRIDGE => Some("bridge"),
        _ => None,
    }
}
