//! The harness itself: a sandbox must be a private world, or every other test is unsafe.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use integration_tests::sandbox;

#[test]
fn sandbox_has_a_private_network_namespace() {
    sandbox(|sb| {
        // A fresh network namespace holds nothing but loopback, and our sysfs shows it.
        assert_eq!(sb.link_names(None), vec!["lo".to_string()]);
        let sys: Vec<_> = std::fs::read_dir("/sys/class/net")
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(sys, vec!["lo".to_string()]);
        // A veth pair made here exists only here.
        sb.sh("ip link add hvtest0 type veth peer name hvtest1");
        assert!(sb.link(None, "hvtest0").is_some());
    });
    // Back on the test's own thread (the machine's namespace) the veth is not visible.
    let out = std::process::Command::new("ip")
        .args(["link", "show", "hvtest0"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "sandbox veth leaked to the host");
}

#[test]
fn named_namespaces_live_in_the_sandbox_only() {
    sandbox(|sb| {
        let path = sb.netns("c1");
        assert!(path.exists());
        assert!(sb.exec_in("c1", "ip link show lo").status.success());
    });
    assert!(!std::path::Path::new("/run/netns/c1").exists());
}

/// Absence checks must have looked: a device that does not exist reads as absent, but an `ip`
/// that could not look (here: a namespace that does not exist) fails the test.
#[test]
fn a_missing_device_is_absent_but_a_failed_look_fails() {
    sandbox(|sb| {
        assert!(sb.link(None, "nosuchdev").is_none());
        assert_eq!(sb.nft_entries("net: "), 0, "no table yet: nothing of ours");
        assert_eq!(sb.iptables_entries("any"), 0);
        let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            sb.link_names(Some("no-such-namespace"))
        }));
        assert!(failed.is_err(), "an ip failure read as an empty listing");
    });
}

/// The shared "nothing left" check sees each kind of leftover.
#[test]
fn nothing_left_check_sees_leases_veths_and_firewall_entries() {
    sandbox(|sb| {
        let data = sb.dir("ipam");
        std::fs::create_dir_all(data.join("n1")).unwrap();
        sb.assert_nothing_left("n1", &data);
        let count = |what: &str| {
            sb.cni_leftovers(&integration_tests::CniState {
                data_dir: &data,
                cache_dir: &sb.scratch().join("cache"),
                network: "n1",
            })
            .into_iter()
            .find(|(w, _)| *w == what)
            .unwrap()
            .1
        };
        std::fs::write(data.join("n1/10.0.0.2"), "c1\r\neth0").unwrap();
        assert_eq!(count("leases"), 1);
        sb.sh("ip link add vethleft0 type veth peer name vethleft1");
        assert_eq!(count("veths"), 2);
        sb.sh(
            "nft add table inet rcni && nft add set inet rcni s '{ type ipv4_addr; }' && \
             nft add element inet rcni s '{ 10.0.0.2 comment \"x net: n1, id: c1, if: eth0\" }'",
        );
        assert_eq!(count("nftables entries"), 1);
        sb.sh("iptables -t nat -A POSTROUTING -s 10.0.0.2 -m comment \
             --comment 'name: \"n1\" id: \"c1\"' -j ACCEPT");
        assert_eq!(count("iptables rules"), 1);
    });
}
