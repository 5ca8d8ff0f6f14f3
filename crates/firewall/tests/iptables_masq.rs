//! Root integration tests of the iptables backend (reference layout), each in private
//! namespaces with a private /run (so the xtables lock is private too).

// Test crate: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use firewall::names::iptables_masq_chain;
use firewall::{firewall, Backend};

fn nat(prog: &str) -> String {
    run(prog, &["-t", "nat"])
}

#[test]
fn iptables_add_list_del_gc_check() {
    in_netns(|| {
        let fw = firewall(Backend::Iptables);
        fw.del_masquerade("n1", "c1", "eth0").unwrap();
        let c1 = [
            rule("n1", "c1", "eth0", "10.22.0.5/24"),
            rule("n1", "c1", "eth0", "fd00:22::5/64"),
        ];
        let c2 = [rule("n1", "c2", "eth0", "10.22.0.6/24")];
        fw.add_masquerade(&c1).unwrap();
        fw.add_masquerade(&c2).unwrap();
        fw.add_masquerade(&c1).unwrap(); // idempotent
        let ch1 = iptables_masq_chain("n1", "c1");
        let ch2 = iptables_masq_chain("n1", "c2");
        let v4 = nat("iptables-save");
        println!("{v4}");
        let comment = "--comment \"name: \\\"n1\\\" id: \\\"c1\\\"\"";
        assert!(v4.contains(&format!(
            "-A POSTROUTING -s 10.22.0.5/32 -m comment {comment} -j {ch1}"
        )));
        assert!(v4.contains(&format!(
            "-A {ch1} -d 10.22.0.0/24 -m comment {comment} -j ACCEPT"
        )));
        assert!(v4.contains(&format!(
            "-A {ch1} ! -d 224.0.0.0/4 -m comment {comment} -j MASQUERADE"
        )));
        assert_eq!(
            v4.matches(&format!("-j {ch1}")).count(),
            1,
            "duplicated jump"
        );
        assert!(v4.contains(&format!("-j {ch2}")));
        let v6 = nat("ip6tables-save");
        assert!(v6.contains(&format!(
            "-A {ch1} ! -d ff00::/8 -m comment {comment} -j MASQUERADE"
        )));
        assert!(v6.contains(&format!(
            "-A POSTROUTING -s fd00:22::5/128 -m comment {comment} -j {ch1}"
        )));
        fw.check_masquerade(&c1).unwrap();

        fw.del_masquerade("n1", "c1", "eth0").unwrap();
        let v4 = nat("iptables-save");
        assert!(!v4.contains(&ch1), "{v4}");
        assert!(v4.contains(&format!("-j {ch2}")));
        assert!(!nat("ip6tables-save").contains(&ch1));
        fw.del_masquerade("n1", "c1", "eth0").unwrap();
        let err = fw.check_masquerade(&c1).unwrap_err().to_string();
        assert!(err.contains("10.22.0.5"), "{err}");

        fw.add_masquerade(&[rule("n1", "c3", "eth0", "10.22.0.7/24")])
            .unwrap();
        fw.add_masquerade(&[rule("n2", "c9", "eth0", "10.33.0.9/24")])
            .unwrap();
        fw.gc_masquerade("n1", &[("c2".into(), "eth0".into())])
            .unwrap();
        let v4 = nat("iptables-save");
        assert!(v4.contains(&format!("-j {ch2}")));
        assert!(!v4.contains(&iptables_masq_chain("n1", "c3")), "{v4}");
        assert!(v4.contains(&iptables_masq_chain("n2", "c9")));
    });
}
