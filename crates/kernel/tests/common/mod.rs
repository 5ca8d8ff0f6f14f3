//! Root test sandbox: each test body runs on a fresh thread that unshares a network and a mount
//! namespace, makes "/" recursively private, and mounts tmpfs on /run and a fresh sysfs on /sys,
//! so nothing can touch the machine's own interfaces, routes, sysctls or /run/netns.

#![allow(dead_code)]

use std::ffi::CString;
use std::process::{Command, Output};

fn check(rc: libc::c_int, what: &str) {
    assert!(rc == 0, "{what}: {}", std::io::Error::last_os_error());
}

fn mount(src: &str, target: &str, fstype: &str, flags: libc::c_ulong) {
    let c = |s: &str| CString::new(s).unwrap();
    let (s, t, f) = (c(src), c(target), c(fstype));
    // SAFETY: valid NUL-terminated strings that outlive the call; no data argument.
    let rc = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), flags, std::ptr::null()) };
    check(rc, &format!("mount {target}"));
}

/// Run `body` in a private net+mount namespace; returns false (after printing SKIPPED) when not root.
pub fn sandbox<F: FnOnce() + Send + 'static>(name: &str, body: F) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIPPED: {name}: needs root (network namespaces)");
        return false;
    }
    let res = std::thread::spawn(move || {
        // SAFETY: unshare only changes this thread's namespaces.
        check(
            unsafe { libc::unshare(libc::CLONE_NEWNET | libc::CLONE_NEWNS) },
            "unshare",
        );
        mount("none", "/", "none", libc::MS_REC | libc::MS_PRIVATE);
        mount("tmpfs", "/run", "tmpfs", 0);
        mount("sysfs", "/sys", "sysfs", 0);
        body();
    })
    .join();
    if let Err(p) = res {
        std::panic::resume_unwind(p);
    }
    true
}

/// Run `ip` (from a sandboxed thread only).
pub fn ip(args: &[&str]) -> Output {
    Command::new("ip").args(args).output().expect("run ip")
}

/// `ip [-n ns] -j link show dev`: the link as JSON, or None if absent.
pub fn ip_link(ns: Option<&str>, dev: &str) -> Option<serde_json::Value> {
    let mut args = Vec::new();
    if let Some(ns) = ns {
        args.extend(["-n", ns]);
    }
    args.extend(["-j", "-d", "link", "show", "dev", dev]);
    let out = ip(&args);
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip json");
    v.as_array().and_then(|a| a.first().cloned())
}

/// `ip [-n ns] -j <args>` as JSON, asserting success.
pub fn ip_json(ns: Option<&str>, args: &[&str]) -> serde_json::Value {
    let mut all = Vec::new();
    if let Some(ns) = ns {
        all.extend(["-n", ns]);
    }
    all.push("-j");
    all.extend(args);
    let out = ip(&all);
    assert!(
        out.status.success(),
        "ip {all:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("ip json")
}
