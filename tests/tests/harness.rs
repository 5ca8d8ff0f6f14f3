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
