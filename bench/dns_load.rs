//! `dns-load`: a closed-loop DNS load generator for bench/dns.sh (issue 15). It sends A queries
//! for names read from a file, round-robin, to one server, from `--clients` threads that each
//! keep one query in flight (send, wait for the reply, send the next), for `--secs` seconds.
//! It prints one line: queries per second, latency p50/p90/p99, and how many replies were wrong
//! (rcode other than NOERROR or no answer record) or missing (no reply within 1 s).
//!
//! The wire format is written by hand here (RFC 1035 §4, a dozen lines): the generator shares
//! no code with either server it measures.
//!
//! Usage: dns-load SERVER_IP:PORT NAMES_FILE [--clients N] [--secs S]
//!        dns-load SERVER_IP:PORT --once NAME   (exit 0 when NAME gets an A record within 0.2 s)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(32 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

struct Stats {
    lat: Vec<Duration>,
    wrong: u64,
    lost: u64,
}

fn client(server: SocketAddr, names: &[String], start: usize, stop: &AtomicBool) -> Stats {
    let s = UdpSocket::bind("0.0.0.0:0").unwrap();
    s.connect(server).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut st = Stats {
        lat: Vec::with_capacity(1 << 16),
        wrong: 0,
        lost: 0,
    };
    let mut buf = [0u8; 1500];
    let mut i = start;
    let mut id: u16 = (start as u16).wrapping_mul(7919);
    while !stop.load(Ordering::Relaxed) {
        let name = &names[i % names.len()];
        i += 1;
        id = id.wrapping_add(1);
        let q = query(id, name);
        let t = Instant::now();
        s.send(&q).unwrap();
        loop {
            match s.recv(&mut buf) {
                Ok(n) if n >= 12 && u16::from_be_bytes([buf[0], buf[1]]) == id => {
                    st.lat.push(t.elapsed());
                    let rcode = buf[3] & 0x0f;
                    let ancount = u16::from_be_bytes([buf[6], buf[7]]);
                    if rcode != 0 || ancount == 0 {
                        st.wrong += 1;
                    }
                    break;
                }
                // A late reply to an earlier (timed-out) query.
                Ok(_) => continue,
                Err(_) => {
                    st.lost += 1;
                    break;
                }
            }
        }
    }
    st
}

fn once(server: SocketAddr, name: &str) -> bool {
    let s = UdpSocket::bind("0.0.0.0:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    if s.send_to(&query(1, name), server).is_err() {
        return false;
    }
    let mut buf = [0u8; 1500];
    match s.recv(&mut buf) {
        Ok(n) => n >= 12 && buf[3] & 0x0f == 0 && u16::from_be_bytes([buf[6], buf[7]]) > 0,
        Err(_) => false,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: dns-load SERVER_IP:PORT NAMES_FILE [--clients N] [--secs S]";
    let server: SocketAddr = args.get(1).expect(usage).parse().expect(usage);
    if args.get(2).map(String::as_str) == Some("--once") {
        std::process::exit(i32::from(!once(server, args.get(3).expect(usage))));
    }
    let names: Vec<String> = std::fs::read_to_string(args.get(2).expect(usage))
        .unwrap()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert!(!names.is_empty(), "no names in {}", args[2]);
    let mut clients = 8;
    let mut secs = 5.0;
    let mut it = args.iter().skip(3);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--clients" => clients = it.next().expect(usage).parse().expect(usage),
            "--secs" => secs = it.next().expect(usage).parse().expect(usage),
            _ => panic!("{usage}"),
        }
    }
    let names = Arc::new(names);
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let (names, stop) = (names.clone(), stop.clone());
            let start = c * names.len() / clients;
            std::thread::spawn(move || client(server, &names, start, &stop))
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    let (mut wrong, mut lost) = (0, 0);
    for h in handles {
        let st = h.join().unwrap();
        lat.extend(st.lat);
        wrong += st.wrong;
        lost += st.lost;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64) * p) as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1e6)
    };
    println!(
        "{server} clients={clients} names={}: {:.0} queries/s, p50 {:.0} us, p90 {:.0} us, p99 {:.0} us, {} queries, {wrong} wrong, {lost} unanswered",
        names.len(),
        lat.len() as f64 / elapsed,
        pct(0.5),
        pct(0.9),
        pct(0.99),
        lat.len()
    );
}
