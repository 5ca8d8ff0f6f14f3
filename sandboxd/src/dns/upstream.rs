//! Forwarding names that are not ours to the host's resolvers, from the daemon's own namespace
//! (so a loopback stub such as systemd-resolved's 127.0.0.53 works, as in Docker).
//!
//! Each query goes out on a fresh socket (a random source port) with a fresh random id that is
//! put back before the reply is relayed, so an off-path attacker has to guess both; the reply
//! must come from the server asked and carry the same question. Servers are tried in order, each
//! for [`PER_SERVER`], at most 3 (what glibc reads from resolv.conf).

use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// How long one upstream server gets to answer (glibc's default is 5 s per try; 2 s keeps the
/// client's own timeout from firing first when the first server is dead).
pub const PER_SERVER: Duration = Duration::from_secs(2);

/// At most this many servers (glibc's MAXNS).
pub const MAX_SERVERS: usize = 3;

/// The name servers of a resolv.conf text (port 53), at most [`MAX_SERVERS`]. Loopback servers
/// are kept: queries leave from the daemon's namespace, where they are reachable.
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut w = line.split_whitespace();
        if w.next() != Some("nameserver") {
            continue;
        }
        // A scoped IPv6 address (`fe80::1%eth0`) names an interface we cannot use here.
        if let Some(ip) = w.next().and_then(|a| a.parse::<IpAddr>().ok()) {
            let sa = SocketAddr::new(ip, 53);
            if !out.contains(&sa) {
                out.push(sa);
            }
        }
    }
    out.truncate(MAX_SERVERS);
    out
}

/// A random 16-bit query id (std's per-process random SipHash keys over a counter: no extra
/// dependency for two bytes).
fn random_id() -> u16 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(N.fetch_add(1, Ordering::Relaxed));
    (h.finish() & 0xffff) as u16
}

fn id_of(b: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*b.first()?, *b.get(1)?]))
}

fn set_id(b: &mut [u8], id: u16) {
    if b.len() >= 2 {
        b[..2].copy_from_slice(&id.to_be_bytes());
    }
}

/// The question section as raw bytes (everything after the 12-byte header up to the end of the
/// first question), to check a reply answers what was asked.
fn question(b: &[u8]) -> Option<&[u8]> {
    let mut i = 12;
    loop {
        let len = usize::from(*b.get(i)?);
        if len == 0 {
            i += 1;
            break;
        }
        if len & 0xc0 != 0 {
            return None;
        }
        i += 1 + len;
    }
    b.get(12..i + 4)
}

fn same_question(q: &[u8], r: &[u8]) -> bool {
    match (question(q), question(r)) {
        (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
        _ => false,
    }
}

async fn udp_once(server: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let bind: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(bind).await?;
    sock.connect(server).await?;
    sock.send(query).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = sock.recv(&mut buf).await?;
        let r = &buf[..n];
        if id_of(r) == id_of(query) && same_question(query, r) {
            return Ok(r.to_vec());
        }
    }
}

async fn tcp_once(server: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(server).await?;
    let len = u16::try_from(query.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "query too long"))?;
    let mut out = Vec::with_capacity(query.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(query);
    s.write_all(&out).await?;
    let n = usize::from(s.read_u16().await?);
    let mut r = vec![0u8; n];
    s.read_exact(&mut r).await?;
    if id_of(&r) == id_of(query) && same_question(query, &r) {
        Ok(r)
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "reply does not match the query",
        ))
    }
}

/// Forward a client's raw query; `tcp` when the client asked over TCP (a truncated UDP reply
/// is relayed as is, and the client retries over TCP). `None` when no server answered.
pub async fn forward(servers: &[SocketAddr], query: &[u8], tcp: bool) -> Option<Vec<u8>> {
    let client_id = id_of(query)?;
    let mut q = query.to_vec();
    for server in servers {
        set_id(&mut q, random_id());
        let r = if tcp {
            tokio::time::timeout(PER_SERVER, tcp_once(*server, &q)).await
        } else {
            tokio::time::timeout(PER_SERVER, udp_once(*server, &q)).await
        };
        match r {
            Ok(Ok(mut reply)) => {
                set_id(&mut reply, client_id);
                return Some(reply);
            }
            Ok(Err(e)) => tracing::debug!(server = %server, error = %e, "upstream failed"),
            Err(_) => tracing::debug!(server = %server, "upstream timed out"),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn resolv_conf_servers() {
        let s = parse_resolv_conf(
            "# x\nnameserver 127.0.0.53\nsearch a\nnameserver ::1\nnameserver 127.0.0.53\n\
             nameserver fe80::1%eth0\nnameserver 10.0.0.1\nnameserver 10.0.0.2\n",
        );
        let want: Vec<SocketAddr> = vec![
            "127.0.0.53:53".parse().unwrap(),
            "[::1]:53".parse().unwrap(),
            "10.0.0.1:53".parse().unwrap(),
        ];
        assert_eq!(s, want);
    }

    #[test]
    fn question_matching() {
        // id 1, one question "a." A IN.
        let q = [0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'a', 0, 0, 1, 0, 1];
        let mut r = q.to_vec();
        r[2] |= 0x80;
        r[13] = b'A';
        assert!(same_question(&q, &r));
        r[16] = 28;
        assert!(!same_question(&q, &r));
    }
}
