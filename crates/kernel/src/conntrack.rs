//! Conntrack entry deletion over `NETLINK_NETFILTER` (ctnetlink), for portmap's UDP cleanup
//! (plugins#123: a UDP flow created before a host port was published keeps its old, non-DNATed
//! conntrack entry and blackholes the traffic until it times out).
//!
//! ctnetlink can only delete by exact tuple, so [`delete_flows`] dumps the table of each family
//! and deletes every entry whose ORIGINAL direction has the given protocol and destination port
//! (and destination address, when given). Works in the namespace of the calling thread.
//!
//! The transport is netlink-sys's socket, as for rtnetlink (`crate::netlink`); only the few
//! ctnetlink attributes we need are encoded and parsed here (no maintained crate covers
//! ctnetlink messages).

use std::io;
use std::net::IpAddr;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

use crate::error::{Error, Result};

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_ZONE: u16 = 18;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const NLA_F_NESTED: u16 = 1 << 15;
const NLA_TYPE_MASK: u16 = 0x3fff;
const HDR: usize = 16;

/// The original-direction tuple of one conntrack entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    /// original source address
    pub src: IpAddr,
    /// original destination address
    pub dst: IpAddr,
    /// IP protocol number
    pub proto: u8,
    /// original source port (0 for portless protocols)
    pub sport: u16,
    /// original destination port
    pub dport: u16,
    /// conntrack zone (0 = default)
    pub zone: u16,
}

fn attr(out: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    out.extend((len as u16).to_ne_bytes());
    out.extend(ty.to_ne_bytes());
    out.extend(payload);
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

/// Walks netlink attributes: (type without flags, payload).
fn attrs(mut b: &[u8]) -> Vec<(u16, &[u8])> {
    let mut v = Vec::new();
    while b.len() >= 4 {
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let ty = u16::from_ne_bytes([b[2], b[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > b.len() {
            break;
        }
        v.push((ty, &b[4..len]));
        let next = (len + 3) & !3;
        if next >= b.len() {
            break;
        }
        b = &b[next..];
    }
    v
}

fn ip_of(p: &[u8]) -> Option<IpAddr> {
    match p.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(p).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(p).ok()?)),
        _ => None,
    }
}

/// Parses the payload (after nfgenmsg) of one IPCTNL_MSG_CT_NEW message.
fn parse_flow(payload: &[u8]) -> Option<Flow> {
    let top = attrs(payload);
    let orig = top.iter().find(|(t, _)| *t == CTA_TUPLE_ORIG)?.1;
    let zone = top
        .iter()
        .find(|(t, _)| *t == CTA_ZONE)
        .and_then(|(_, p)| Some(u16::from_be_bytes([*p.first()?, *p.get(1)?])))
        .unwrap_or(0);
    let (mut src, mut dst, mut proto, mut sport, mut dport) = (None, None, None, 0, 0);
    for (t, p) in attrs(orig) {
        match t {
            CTA_TUPLE_IP => {
                for (t, p) in attrs(p) {
                    match t {
                        CTA_IP_V4_SRC | CTA_IP_V6_SRC => src = ip_of(p),
                        CTA_IP_V4_DST | CTA_IP_V6_DST => dst = ip_of(p),
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for (t, p) in attrs(p) {
                    let port = || {
                        u16::from_be_bytes([
                            p.first().copied().unwrap_or(0),
                            p.get(1).copied().unwrap_or(0),
                        ])
                    };
                    match t {
                        CTA_PROTO_NUM => proto = p.first().copied(),
                        CTA_PROTO_SRC_PORT => sport = port(),
                        CTA_PROTO_DST_PORT => dport = port(),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some(Flow {
        src: src?,
        dst: dst?,
        proto: proto?,
        sport,
        dport,
        zone,
    })
}

/// Payload of a DELETE request for `f` (nfgenmsg + CTA_TUPLE_ORIG [+ CTA_ZONE]).
fn delete_payload(f: &Flow) -> Vec<u8> {
    let (s_ty, d_ty, s, d) = match (f.src, f.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => (
            CTA_IP_V4_SRC,
            CTA_IP_V4_DST,
            s.octets().to_vec(),
            d.octets().to_vec(),
        ),
        (s, d) => {
            let b = |a: IpAddr| match a {
                IpAddr::V4(x) => x.to_ipv6_mapped().octets().to_vec(),
                IpAddr::V6(x) => x.octets().to_vec(),
            };
            (CTA_IP_V6_SRC, CTA_IP_V6_DST, b(s), b(d))
        }
    };
    let mut ip = Vec::new();
    attr(&mut ip, s_ty, &s);
    attr(&mut ip, d_ty, &d);
    let mut proto = Vec::new();
    attr(&mut proto, CTA_PROTO_NUM, &[f.proto]);
    attr(&mut proto, CTA_PROTO_SRC_PORT, &f.sport.to_be_bytes());
    attr(&mut proto, CTA_PROTO_DST_PORT, &f.dport.to_be_bytes());
    let mut tuple = Vec::new();
    attr(&mut tuple, CTA_TUPLE_IP | NLA_F_NESTED, &ip);
    attr(&mut tuple, CTA_TUPLE_PROTO | NLA_F_NESTED, &proto);
    let mut out = nfgen(f.src.is_ipv6());
    attr(&mut out, CTA_TUPLE_ORIG | NLA_F_NESTED, &tuple);
    if f.zone != 0 {
        attr(&mut out, CTA_ZONE, &f.zone.to_be_bytes());
    }
    out
}

fn nfgen(v6: bool) -> Vec<u8> {
    let fam = if v6 { libc::AF_INET6 } else { libc::AF_INET } as u8;
    vec![fam, 0, 0, 0]
}

struct Sock {
    sock: Socket,
    seq: u32,
}

fn io_err(ctx: &str, e: io::Error) -> Error {
    Error::io(format!("conntrack: {ctx}"), e)
}

impl Sock {
    fn open() -> Result<Sock> {
        let sock = Socket::new(NETLINK_NETFILTER).map_err(|e| io_err("open netlink socket", e))?;
        Ok(Sock { sock, seq: 1 })
    }

    fn send(&mut self, msg_type: u16, flags: u16, payload: &[u8]) -> Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let len = HDR + payload.len();
        let mut m = Vec::with_capacity(len);
        m.extend((len as u32).to_ne_bytes());
        m.extend(((NFNL_SUBSYS_CTNETLINK << 8) | msg_type).to_ne_bytes());
        m.extend((flags | libc::NLM_F_REQUEST as u16).to_ne_bytes());
        m.extend(self.seq.to_ne_bytes());
        m.extend(0u32.to_ne_bytes());
        m.extend(payload);
        // Port 0 = the kernel.
        self.sock
            .send_to(&m, &SocketAddr::new(0, 0), 0)
            .map_err(|e| io_err("send", e))?;
        Ok(self.seq)
    }

    /// Reads replies to `seq` until DONE or the ACK/error; data messages go to `on_data`.
    fn recv_until(&mut self, seq: u32, on_data: &mut dyn FnMut(&[u8])) -> Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match self.sock.recv(&mut &mut buf[..], 0) {
                Ok(n) => n.min(buf.len()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err("receive", e)),
            };
            let mut b = &buf[..n];
            while b.len() >= HDR {
                let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
                let ty = u16::from_ne_bytes([b[4], b[5]]);
                let mseq = u32::from_ne_bytes([b[8], b[9], b[10], b[11]]);
                if len < HDR || len > b.len() {
                    break;
                }
                let body = &b[HDR..len];
                if mseq == seq {
                    match ty as i32 {
                        libc::NLMSG_DONE => return Ok(()),
                        libc::NLMSG_ERROR => {
                            let errno = body
                                .get(..4)
                                .map(|e| -i32::from_ne_bytes([e[0], e[1], e[2], e[3]]))
                                .unwrap_or(0);
                            if errno == 0 {
                                return Ok(());
                            }
                            return Err(Error::Netlink {
                                op: "conntrack",
                                errno,
                                target: String::new(),
                                ext_ack: String::new(),
                            });
                        }
                        _ => on_data(body.get(4..).unwrap_or(&[])),
                    }
                }
                let next = (len + 3) & !3;
                if next >= b.len() {
                    break;
                }
                b = &b[next..];
            }
        }
    }
}

/// Every conntrack entry of one family (original tuples).
pub fn list(v6: bool) -> Result<Vec<Flow>> {
    let mut s = Sock::open()?;
    let seq = s.send(IPCTNL_MSG_CT_GET, libc::NLM_F_DUMP as u16, &nfgen(v6))?;
    let mut flows = Vec::new();
    s.recv_until(seq, &mut |p| flows.extend(parse_flow(p)))?;
    Ok(flows)
}

/// Deletes every entry (both families) whose original direction has protocol `proto`, a
/// destination port in `ports` and, when given, destination address `daddr`. Returns how
/// many were deleted; entries that vanish meanwhile are not errors.
pub fn delete_flows(proto: u8, ports: &[u16], daddr: Option<IpAddr>) -> Result<usize> {
    if ports.is_empty() {
        return Ok(0);
    }
    let mut deleted = 0;
    for v6 in [false, true] {
        if daddr.is_some_and(|d| d.is_ipv6() != v6) {
            continue;
        }
        let flows = list(v6)?;
        let mut s = Sock::open()?;
        for f in flows.iter().filter(|f| {
            f.proto == proto && ports.contains(&f.dport) && daddr.is_none_or(|d| d == f.dst)
        }) {
            let seq = s.send(
                IPCTNL_MSG_CT_DELETE,
                libc::NLM_F_ACK as u16,
                &delete_payload(f),
            )?;
            match s.recv_until(seq, &mut |_| {}) {
                Ok(()) => deleted += 1,
                Err(Error::Netlink { errno, .. }) if errno == libc::ENOENT => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delete_payload_roundtrips_through_the_parser() {
        let f = Flow {
            src: "10.0.0.1".parse().unwrap(),
            dst: "10.0.0.2".parse().unwrap(),
            proto: 17,
            sport: 40000,
            dport: 5353,
            zone: 0,
        };
        let p = delete_payload(&f);
        assert_eq!(p[0], libc::AF_INET as u8);
        assert_eq!(parse_flow(&p[4..]).unwrap(), f);
        let f6 = Flow {
            src: "fd00::1".parse().unwrap(),
            dst: "fd00::2".parse().unwrap(),
            zone: 3,
            ..f
        };
        let p = delete_payload(&f6);
        assert_eq!(parse_flow(&p[4..]).unwrap(), f6);
    }
}
