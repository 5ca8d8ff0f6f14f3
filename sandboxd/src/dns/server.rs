//! The wire side: one UDP socket and one TCP listener per (network, gateway address), answering
//! from the current [`Table`] snapshot; names that are not ours go to [`super::upstream`].
//!
//! Sockets are bound with `IP_FREEBIND`: a network's gateway address only appears on the host
//! when the bridge plugin creates the bridge at the first attachment, and the listener must
//! already be there when that attachment's connect returns. A freebind socket is bound before its
//! address exists and receives as soon as it does.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, Metadata, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, PTR};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::table::{Answer, Table};
use super::upstream;

/// What every listener shares: the current snapshot and the forwarding budget.
pub struct Shared {
    /// The snapshot, replaced whole by the owner (readers clone the `Arc` and let go at once).
    pub table: RwLock<Arc<Table>>,
    /// Forwarded queries in flight (Docker allows 1024); beyond that a query gets SERVFAIL.
    pub inflight: Arc<Semaphore>,
}

impl Shared {
    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Table> {
        match self.table.read() {
            Ok(t) => t.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

/// Largest UDP answer we send (the DNS flag day 2020 value); without EDNS, 512.
const EDNS_PAYLOAD: u16 = 1232;

/// What to do with one query.
#[derive(Debug)]
pub enum Step {
    /// Send this reply.
    Reply(Vec<u8>),
    /// Forward to these servers.
    Forward(Vec<SocketAddr>),
    /// Ignore (not a query, or garbage without an id).
    Drop,
}

fn encode(m: &Message) -> Step {
    match m.to_vec() {
        Ok(b) => Step::Reply(b),
        Err(e) => {
            tracing::debug!(error = %e, "encoding a DNS reply");
            Step::Drop
        }
    }
}

fn error_reply(id: u16, code: ResponseCode) -> Step {
    encode(&Message::error_msg(id, OpCode::Query, code))
}

/// Answer one raw query received on `net`'s listener from `src`.
pub fn respond(table: &Table, net: &str, src: IpAddr, raw: &[u8], tcp: bool) -> Step {
    let req = match Message::from_vec(raw) {
        Ok(m) => m,
        Err(_) => {
            return match raw.get(..2) {
                Some(b) => error_reply(u16::from_be_bytes([b[0], b[1]]), ResponseCode::FormErr),
                None => Step::Drop,
            }
        }
    };
    if req.metadata.message_type != MessageType::Query {
        return Step::Drop;
    }
    let id = req.metadata.id;
    if req.metadata.op_code != OpCode::Query {
        return error_reply(id, ResponseCode::NotImp);
    }
    let [q] = req.queries.as_slice() else {
        return error_reply(id, ResponseCode::FormErr);
    };
    let forward = table.may_forward(net, src);
    let ascii = q.name().to_ascii().to_ascii_lowercase();
    let qname = ascii.strip_suffix('.').unwrap_or(&ascii);
    let answer = if q.query_class() == DNSClass::IN {
        table.lookup(net, src, qname)
    } else if forward {
        Answer::Forward
    } else {
        Answer::Refuse
    };
    let mut resp = Message::new(id, MessageType::Response, OpCode::Query);
    resp.metadata = Metadata::response_from_request(&req.metadata);
    resp.metadata.recursion_available = forward;
    resp.add_query(q.clone());
    let limit = match &req.edns {
        Some(e) => {
            let mut edns = Edns::new();
            edns.set_max_payload(EDNS_PAYLOAD);
            resp.set_edns(edns);
            e.max_payload().clamp(512, EDNS_PAYLOAD)
        }
        None => 512,
    };
    match answer {
        Answer::Addrs(addrs) => {
            resp.metadata.authoritative = true;
            let qt = q.query_type();
            for a in addrs {
                let rdata = match a {
                    IpAddr::V4(v) if matches!(qt, RecordType::A | RecordType::ANY) => {
                        RData::A(A(v))
                    }
                    IpAddr::V6(v) if matches!(qt, RecordType::AAAA | RecordType::ANY) => {
                        RData::AAAA(AAAA(v))
                    }
                    _ => continue,
                };
                // TTL 0: a name removed by disconnect must not live on in a caching client.
                resp.add_answer(Record::from_rdata(q.name().clone(), 0, rdata));
            }
        }
        Answer::Ptr(target) => {
            resp.metadata.authoritative = true;
            if matches!(q.query_type(), RecordType::PTR | RecordType::ANY) {
                if let Ok(n) = Name::from_ascii(format!("{target}.")) {
                    resp.add_answer(Record::from_rdata(q.name().clone(), 0, RData::PTR(PTR(n))));
                }
            }
        }
        Answer::NxDomain => {
            resp.metadata.authoritative = true;
            resp.metadata.response_code = ResponseCode::NXDomain;
        }
        // A sandbox only on internal networks has no way out: names beyond them do not exist
        // for it, and saying so at once beats a client timeout.
        Answer::Refuse => resp.metadata.response_code = ResponseCode::NXDomain,
        Answer::NotOurs => resp.metadata.response_code = ResponseCode::Refused,
        Answer::Forward => {
            if table.upstream.is_empty() {
                resp.metadata.response_code = ResponseCode::ServFail;
            } else {
                return Step::Forward(table.upstream.clone());
            }
        }
    }
    match encode(&resp) {
        Step::Reply(b) if !tcp && b.len() > usize::from(limit) => encode(&resp.truncate()),
        s => s,
    }
}

fn servfail_for(raw: &[u8]) -> Option<Vec<u8>> {
    let req = Message::from_vec(raw).ok()?;
    let mut m = Message::error_msg(req.metadata.id, OpCode::Query, ResponseCode::ServFail);
    m.metadata.recursion_desired = req.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    if let Some(q) = req.queries.first() {
        m.add_query(Query::query(q.name().clone(), q.query_type()));
    }
    m.to_vec().ok()
}

fn socket(addr: SocketAddr, ty: Type, proto: Protocol, freebind: bool) -> std::io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
        s.set_freebind_v6(freebind)?;
    } else {
        s.set_freebind_v4(freebind)?;
    }
    // A listener of a removed network may still be closing when the address is bound again.
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s)
}

/// Bind the UDP socket and TCP listener of one address (synchronously, so the caller knows the
/// listener exists when it returns); without `freebind` the address must be a host address.
pub fn bind(
    ip: IpAddr,
    port: u16,
    freebind: bool,
) -> std::io::Result<(std::net::UdpSocket, std::net::TcpListener)> {
    let addr = SocketAddr::new(ip, port);
    let udp = socket(addr, Type::DGRAM, Protocol::UDP, freebind)?;
    let tcp = socket(addr, Type::STREAM, Protocol::TCP, freebind)?;
    tcp.listen(128)?;
    Ok((udp.into(), tcp.into()))
}

/// Serve UDP queries on a dedicated thread until `stop` is set (and the socket shut down to
/// wake the blocked receive). Local names are answered on this thread with plain blocking
/// `recv_from`/`send_to`; only forwarded queries go to the tokio runtime `rt`. A tokio task per
/// socket was measured with bench/dns.sh at two thirds of dnsmasq's throughput for the same
/// answers (each datagram cost an epoll round and a task wake-up, while answering itself takes
/// under a microsecond); the thread reaches dnsmasq's (docs/benchmarks.md).
pub fn serve_udp(
    sock: &Arc<std::net::UdpSocket>,
    net: &str,
    shared: &Arc<Shared>,
    rt: &tokio::runtime::Handle,
    stop: &std::sync::atomic::AtomicBool,
) {
    use std::sync::atomic::Ordering;
    let mut buf = vec![0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        let (n, src) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            // ICMP errors of earlier replies, interrupted calls, the read timeout: keep going
            // (the loop condition notices a stop).
            Err(e) => {
                tracing::trace!(network = %net, error = %e, "DNS receive");
                continue;
            }
        };
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let raw = &buf[..n];
        let table = shared.snapshot();
        match respond(&table, net, src.ip(), raw, false) {
            Step::Reply(b) => {
                let _ = sock.send_to(&b, src);
            }
            Step::Drop => {}
            Step::Forward(servers) => {
                let Ok(permit) = shared.inflight.clone().try_acquire_owned() else {
                    if let Some(b) = servfail_for(raw) {
                        let _ = sock.send_to(&b, src);
                    }
                    continue;
                };
                let raw = raw.to_vec();
                let sock = sock.clone();
                rt.spawn(async move {
                    let reply = upstream::forward(&servers, &raw, false)
                        .await
                        .or_else(|| servfail_for(&raw));
                    if let Some(b) = reply {
                        // A UDP send does not wait (the datagram is queued or dropped).
                        let _ = sock.send_to(&b, src);
                    }
                    drop(permit);
                });
            }
        }
    }
}

/// Serve TCP connections until the task is aborted (each connection in its own task).
pub async fn serve_tcp(l: TcpListener, net: String, shared: Arc<Shared>) {
    loop {
        let Ok((s, src)) = l.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (net, shared) = (net.clone(), shared.clone());
        tokio::spawn(async move {
            let _ = tcp_conn(s, src.ip(), &net, &shared).await;
        });
    }
}

async fn tcp_conn(
    mut s: TcpStream,
    src: IpAddr,
    net: &str,
    shared: &Shared,
) -> std::io::Result<()> {
    loop {
        // RFC 7766: an idle connection may be closed; 10 s is generous for a local client.
        let n = match tokio::time::timeout(Duration::from_secs(10), s.read_u16()).await {
            Ok(r) => usize::from(r?),
            Err(_) => return Ok(()),
        };
        let mut raw = vec![0u8; n];
        s.read_exact(&mut raw).await?;
        let table = shared.snapshot();
        let reply = match respond(&table, net, src, &raw, true) {
            Step::Reply(b) => Some(b),
            Step::Drop => None,
            Step::Forward(servers) => upstream::forward(&servers, &raw, true)
                .await
                .or_else(|| servfail_for(&raw)),
        };
        if let Some(b) = reply {
            let len = u16::try_from(b.len()).unwrap_or(u16::MAX);
            let mut out = Vec::with_capacity(b.len() + 2);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&b);
            s.write_all(&out).await?;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ask(name: &str, qt: RecordType, edns: bool, src: &str, net: &str) -> Message {
        let mut m = Message::query();
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), qt));
        if edns {
            m.set_edns(Edns::new());
        }
        let t = crate::dns::table::tests::sample();
        match respond(&t, net, src.parse().unwrap(), &m.to_vec().unwrap(), false) {
            Step::Reply(b) => {
                let r = Message::from_vec(&b).unwrap();
                assert_eq!(r.metadata.id, m.metadata.id);
                assert_eq!(r.queries, m.queries);
                r
            }
            s => panic!("{name}: {s:?}"),
        }
    }

    #[test]
    fn wire_answers() {
        let r = ask("DB.a.", RecordType::A, false, "10.1.0.2", "a");
        assert!(r.metadata.authoritative && r.metadata.recursion_available);
        assert_eq!(r.answers.len(), 1);
        assert_eq!(r.answers[0].data, RData::A(A("10.1.0.3".parse().unwrap())));
        // The asked spelling is kept (0x20 case randomisation), TTL 0.
        assert_eq!(r.answers[0].name.to_ascii(), "DB.a.");
        assert_eq!(r.answers[0].ttl, 0);
        // NODATA for another type of an existing name.
        let r = ask("db.", RecordType::AAAA, true, "10.1.0.2", "a");
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(r.answers.is_empty() && r.edns.is_some());
        let r = ask("nosuch.a.", RecordType::A, false, "10.1.0.2", "a");
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
        let r = ask(
            "3.0.1.10.in-addr.arpa.",
            RecordType::PTR,
            false,
            "10.1.0.2",
            "a",
        );
        assert_eq!(
            r.answers[0].data,
            RData::PTR(PTR(Name::from_ascii("db.").unwrap()))
        );
        // Internal network: no forwarding, NXDOMAIN, no recursion offered.
        let r = ask("example.com.", RecordType::A, false, "10.3.0.4", "i");
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
        assert!(!r.metadata.recursion_available);
        // No upstream known: SERVFAIL at once rather than silence.
        let r = ask("example.com.", RecordType::A, false, "10.1.0.2", "a");
        assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
        // Garbage with an id gets FORMERR; shorter garbage nothing.
        let t = Table::default();
        assert!(matches!(
            respond(&t, "a", "10.1.0.2".parse().unwrap(), &[1, 2, 3], false),
            Step::Reply(_)
        ));
        assert!(matches!(
            respond(&t, "a", "10.1.0.2".parse().unwrap(), &[1], false),
            Step::Drop
        ));
    }

    #[test]
    fn truncation_without_edns() {
        let nets = [crate::dns::table::tests::net("a", "10.1.0.0/16", false)]
            .into_iter()
            .map(|n| (n.network.name.clone(), n))
            .collect();
        // 60 sandboxes share one alias: 60 A records (about 1 KB) do not fit in 512 bytes.
        let sbs = (0..60u32)
            .map(|i| {
                let a = format!("10.1.0.{}/16", i + 2);
                let s = crate::dns::table::tests::sb(
                    &format!("s{i}"),
                    'a',
                    &[("a", a.as_str(), &["many"])],
                );
                (s.name.clone(), s)
            })
            .collect();
        let t = Table::build(&nets, &sbs, vec![]);
        let ask = |edns: bool, tcp: bool| {
            let mut m = Message::query();
            m.add_query(Query::query(
                Name::from_ascii("many.").unwrap(),
                RecordType::A,
            ));
            if edns {
                let mut e = Edns::new();
                e.set_max_payload(4096);
                m.set_edns(e);
            }
            let raw = m.to_vec().unwrap();
            match respond(&t, "a", "10.1.0.2".parse().unwrap(), &raw, tcp) {
                Step::Reply(b) => (b.len(), Message::from_vec(&b).unwrap()),
                s => panic!("{s:?}"),
            }
        };
        let (len, r) = ask(false, false);
        assert!(
            len <= 512 && r.metadata.truncation && r.answers.is_empty(),
            "{len}"
        );
        let (len, r) = ask(true, false);
        assert!(
            len <= 1232 && !r.metadata.truncation && r.answers.len() == 60,
            "{len}"
        );
        let (_, r) = ask(false, true);
        assert!(!r.metadata.truncation && r.answers.len() == 60);
    }

    #[test]
    fn forward_when_upstream_known() {
        let mut t = crate::dns::table::tests::sample();
        t.upstream = vec!["127.0.0.1:53".parse().unwrap()];
        let mut m = Message::query();
        m.add_query(Query::query(
            Name::from_ascii("example.com.").unwrap(),
            RecordType::A,
        ));
        let s = respond(
            &t,
            "a",
            "10.1.0.2".parse().unwrap(),
            &m.to_vec().unwrap(),
            false,
        );
        assert!(matches!(s, Step::Forward(v) if v.len() == 1));
    }
}

#[cfg(test)]
mod cost {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// CPU cost of answering one query from a table of 1000 names (printed; meaningful with
    /// `--release`).
    #[test]
    fn respond_cost() {
        let nets = [crate::dns::table::tests::net("a", "10.1.0.0/16", false)]
            .into_iter()
            .map(|n| (n.network.name.clone(), n))
            .collect();
        let sbs = (0..1000u32)
            .map(|i| {
                let a = format!("10.1.{}.{}/16", i / 250, i % 250 + 2);
                let s =
                    crate::dns::table::tests::sb(&format!("s{i}"), 'a', &[("a", a.as_str(), &[])]);
                (s.name.clone(), s)
            })
            .collect();
        let t = Table::build(&nets, &sbs, vec![]);
        let qs: Vec<Vec<u8>> = (0..1000)
            .map(|i| {
                let mut m = Message::query();
                m.add_query(Query::query(
                    Name::from_ascii(format!("s{i}.")).unwrap(),
                    RecordType::A,
                ));
                m.to_vec().unwrap()
            })
            .collect();
        let src: IpAddr = "10.1.0.2".parse().unwrap();
        let n = 100_000;
        let start = std::time::Instant::now();
        for i in 0..n {
            assert!(matches!(
                respond(&t, "a", src, &qs[i % 1000], false),
                Step::Reply(_)
            ));
        }
        eprintln!("respond: {:?} per query", start.elapsed() / n as u32);
    }
}
