//! `fw_scaling`: by-hand figures of the nftables firewall's cost as the number of containers
//! grows (moved out of `cargo test`, where they asserted nothing about time). It prints, never
//! asserts on time; the element counts are still checked so a figure is never taken over a
//! table that did not hold what it claims.
//!
//! Usage: cargo run -p rcni-bench --bin fw_scaling (as root; runs in the test sandbox, a
//! private network + mount namespace).
//!
//! * masquerade: mean ADD and DEL with 1 vs 2000 other containers (ADD does keyed lookups
//!   only, DEL dumps our two sets);
//! * portmap: ADD p50 around 10/100/500/1000 published containers, and one DEL at 1000.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use firewall::list::list_all;
use firewall::portmap::{port_forwarder, PortMap, PortmapSpec};
use firewall::{firewall, Backend, Firewall, MasqRule};
use integration_tests::sandbox;

fn rule(net: &str, cid: &str, addr: &str) -> MasqRule {
    MasqRule {
        network: net.into(),
        container_id: cid.into(),
        ifname: "eth0".into(),
        addr: addr.parse().unwrap(),
    }
}

/// Elements of our masquerade sets.
fn masq_elems() -> usize {
    list_all()
        .unwrap()
        .iter()
        .filter(|e| e.object.starts_with("inet rcni set masq"))
        .count()
}

fn masquerade() {
    let fw = firewall(Backend::Nftables);
    let rounds = 40u32;
    let measure = |fw: &dyn Firewall| {
        let (mut add, mut del) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..rounds {
            let t = Instant::now();
            fw.add_masquerade(&[rule("sn", "probe", "10.99.255.254/16")])
                .unwrap();
            add += t.elapsed();
            let t = Instant::now();
            fw.del_masquerade("sn", "probe", "eth0").unwrap();
            del += t.elapsed();
        }
        (add / rounds, del / rounds)
    };
    // one resident container keeps the shared chain, as in a real network
    fw.add_masquerade(&[rule("sn", "c0", "10.99.0.1/16")])
        .unwrap();
    let small = measure(fw.as_ref());
    let many = 2000u32;
    for i in 1..many {
        let addr = format!("10.99.{}.{}/16", i / 250, i % 250 + 1);
        fw.add_masquerade(&[rule("sn", &format!("c{i}"), &addr)])
            .unwrap();
    }
    let big = measure(fw.as_ref());
    println!(
        "nft masquerade mean ADD: {:?} with 1 other, {:?} with {many} others (ratio {:.2}); \
         mean DEL: {:?} vs {:?} (ratio {:.2})",
        small.0,
        big.0,
        big.0.as_secs_f64() / small.0.as_secs_f64(),
        small.1,
        big.1,
        big.1.as_secs_f64() / small.1.as_secs_f64()
    );
    assert_eq!(masq_elems(), many as usize);
    fw.gc_masquerade("sn", &[]).unwrap();
}

fn portmap() {
    let fw = port_forwarder(Backend::Nftables);
    let n = 1000u32;
    let mut adds = Vec::new();
    for i in 0..n {
        let mut s = PortmapSpec::new("pnet", &format!("c{i}"), "eth0");
        s.v4 = Some(
            format!("10.40.{}.{}/16", i / 250, i % 250 + 1)
                .parse()
                .unwrap(),
        );
        s.mappings = vec![PortMap::from_raw(20000 + i64::from(i), 80, "tcp", "").unwrap()];
        let t = Instant::now();
        fw.add_portmap(&s).unwrap();
        adds.push(t.elapsed());
    }
    let p50 = |w: &[Duration]| {
        let mut v = w.to_vec();
        v.sort();
        v[v.len() / 2]
    };
    for at in [10usize, 100, 500, 1000] {
        println!(
            "nft portmap ADD p50 around n={at}: {:?}",
            p50(&adds[at - 10..at])
        );
    }
    let t = Instant::now();
    fw.del_portmap("pnet", "c500", "eth0").unwrap();
    println!("nft portmap DEL at n={n}: {:?}", t.elapsed());
    assert!(!list_all()
        .unwrap()
        .iter()
        .any(|e| e.comment.contains("id: c500,")));
    fw.gc_portmap("pnet", &[]).unwrap();
}

fn main() {
    sandbox(|_| {
        masquerade();
        portmap();
    });
}
