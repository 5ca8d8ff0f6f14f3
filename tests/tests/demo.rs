//! The README's first command must keep working: run the demo script against the freshly built
//! binaries (it makes its own private namespaces) and require a clean teardown.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use integration_tests::bin_dir;

#[test]
fn demo_runs_and_leaves_nothing() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "the demo needs root");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/demo.sh");
    let out = std::process::Command::new("bash")
        .arg(script)
        .arg(bin_dir())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "web -> db over IPv4",
        "db -> web over IPv6",
        "through masquerade",
        "published port reaches web:80",
        "127.0.0.1:8080 reaches web:80",
        "hairpins to web:80",
        "nothing left: 0 veths, 0 leases, 0 firewall entries, 0 cache files",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    assert!(!stdout.contains("FAIL"), "{stdout}");
}
