//! The sandbox policy itself: a missing precondition fails with the reason, and the sandbox is
//! private (kept out of src/ because crates/firewall includes that file by path).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use testbox::{isolated, nft_table, require_tool};

#[test]
#[should_panic(expected = "required tool `no-such-tool-rcni` is not installed")]
fn a_missing_tool_fails_with_its_name() {
    require_tool("no-such-tool-rcni");
}

#[test]
fn isolation_gives_a_private_network_namespace() {
    let outer = std::fs::read_link("/proc/self/ns/net").unwrap();
    let inner = isolated(|| std::fs::read_link("/proc/thread-self/ns/net").unwrap());
    assert_ne!(outer, inner);
    assert_eq!(std::fs::read_link("/proc/self/ns/net").unwrap(), outer);
}

#[test]
fn run_is_private_to_the_sandbox() {
    let marker = "/run/rcni-testbox-private-marker";
    isolated(|| std::fs::write(marker, "x").unwrap());
    assert!(
        !Path::new(marker).exists(),
        "{marker} leaked out of the sandbox"
    );
}

#[test]
fn an_absent_nft_table_reads_as_none() {
    isolated(|| assert!(nft_table("inet", "rcni").is_none()));
}

#[test]
#[should_panic(expected = "nft list table")]
fn an_nft_failure_other_than_absence_fails_the_check() {
    // An invalid family: nft fails, but not with "No such file", so the check must not
    // read it as "no table".
    isolated(|| nft_table("nosuchfamily", "rcni"));
}
