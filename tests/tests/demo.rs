//! The README's first command must keep working: run the demo scripts against the freshly built
//! binaries (they make their own private namespaces) and require a clean teardown. `demo.sh` is
//! the main job (sandboxd in every mode); `plugins-demo.sh` plays the runtime with the plugins.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use integration_tests::bin_dir;

/// Run `examples/<name>` against our binaries; its stdout, after asserting it succeeded.
fn run_demo(name: &str) -> String {
    testbox::require_root("the demo scripts make network namespaces");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name);
    let out = std::process::Command::new("bash")
        .arg(script)
        .arg(bin_dir())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{name} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!stdout.contains("FAIL"), "{stdout}");
    stdout
}

#[test]
fn sandboxd_demo_runs_every_mode_survives_restarts_and_leaves_nothing() {
    let stdout = run_demo("demo.sh");
    for expected in [
        "db -> web (10.50.0.2) on app",
        "web -> remote (masqueraded)",
        "published port: host 127.0.0.1:8080 -> web:80",
        "plain (bridge) cannot reach web (app): networks are isolated",
        "db resolves web -> 10.50.0.2",
        "db resolves web.app -> 10.50.0.2",
        "plain (bridge) cannot resolve web",
        "published port: remote -> 203.0.113.1:8080 -> web:80",
        "sees web's eth0",
        "none -> lo-only has loopback only",
        "host -> hostnet uses the host namespace",
        "eth1 gone after disconnect",
        "daemon down: db -> web still flows",
        "after SIGTERM + start: 6 sandboxes",
        "after kill -9 + start: published port still answers",
        "port answers again after repair",
        "nothing left: 0 veths, 0 pinned namespaces, 0 firewall entries, 0 leases",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
}

#[test]
fn plugins_demo_runs_and_leaves_nothing() {
    let stdout = run_demo("plugins-demo.sh");
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
}
