//! A panicking plugin must still answer the runtime with a CNI error JSON on stdout, never with a
//! Rust panic message. The test re-executes its own binary as the "plugin" (the hook exits the
//! process, so it cannot run inside the test harness's process).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::{Command, Stdio};

use cni::error::CniError;
use cni::result::CniResult;
use cni::skel::{CmdArgs, NetnsPolicy, Plugin};

struct Panicky;

impl Plugin for Panicky {
    fn netns_policy(&self) -> NetnsPolicy {
        NetnsPolicy::AllowAny
    }
    fn add(&self, _args: &CmdArgs) -> Result<CniResult, CniError> {
        panic!("boom in ADD");
    }
    fn del(&self, _args: &CmdArgs) -> Result<(), CniError> {
        Ok(())
    }
    fn check(&self, _args: &CmdArgs) -> Result<(), CniError> {
        Ok(())
    }
}

#[test]
fn panic_becomes_a_cni_error_on_stdout() {
    if std::env::var_os("RCNI_PANIC_CHILD").is_some() {
        cni::skel::run(&Panicky, "panicky test plugin");
    }
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "panic_becomes_a_cni_error_on_stdout",
            "--nocapture",
        ])
        .env("RCNI_PANIC_CHILD", "1")
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", "c1")
        .env("CNI_NETNS", "/proc/self/ns/net")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/nonexistent")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"cniVersion":"1.0.0","name":"n","type":"panicky"}"#)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The test harness of the child prints its own banner lines; the plugin's stdout is the one
    // JSON object among them.
    let json_line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON on stdout: {stdout}"));
    let v: serde_json::Value = serde_json::from_str(json_line).unwrap();
    assert_eq!(v["code"], 999, "{v}");
    assert_eq!(v["cniVersion"], "1.0.0", "{v}");
    assert!(
        v["details"].as_str().unwrap().contains("boom in ADD"),
        "{v}"
    );
    // The location may appear inside `details`, but never as a raw line of its own.
    assert!(
        !stdout
            .lines()
            .any(|l| l.contains("panicked at") && !l.trim_start().starts_with('{')),
        "raw panic message on stdout: {stdout}"
    );
}
