//! Keeps `rcni-bench` working: a `--quick` run (5 attachments per implementation, 10 in
//! parallel, with the reference when installed) must finish and print every section. It asserts
//! nothing about time: figures are read off the full runs (`./suite.sh bench`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use integration_tests::bin_dir;

#[test]
fn bench_quick_run_prints_floors_ratios_and_phases() {
    let bench = bin_dir().join("rcni-bench");
    assert!(
        bench.exists(),
        "{} missing: run `cargo build --workspace --bins` first",
        bench.display()
    );
    let out = std::process::Command::new(&bench)
        .args(["--quick", "--scale", "10"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "rcni-bench failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "ours ADD",
        "floor: static exec",
        "floor: kernel attach",
        "ours ADD p50 / floor of this chain",
        "ours DEL p50 / kernel veth-delete p50",
        "duplicate IPs 0",
        "floor attach steps p50",
        "bridge.veth",
        "host-local.listing",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
}
