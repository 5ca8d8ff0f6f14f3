//! `add`, `del`, `list`, `exec`: namespaces pinned under /run/netns, interchangeable with
//! `ip netns` (same directory, same bind-mount pins, shared mount propagation).

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use serde::Serialize;

#[cfg(test)]
use crate::ctx::check_ns_name;
use crate::ctx::Ctx;
use crate::error::{kernel, Error, Result};
use crate::table::Table;

/// `netns add NAME`.
pub fn add(ctx: &Ctx, name: &str) -> Result<()> {
    // Stricter than `ip netns`: the name doubles as the default container ID, so it must match
    // the CNI container-ID regex.
    cni::validate_name("namespace name", name).map_err(|e| {
        Error::Usage(format!(
            "invalid namespace name {name:?}: {} (use letters, digits, '_', '.', '-', starting with a letter or digit)",
            e.msg
        ))
    })?;
    if ctx.ns_path(name).exists() {
        return Err(Error::Failed(format!(
            "namespace {name:?} already exists at {}",
            ctx.ns_path(name).display()
        )));
    }
    kernel::netns::create_pinned(&ctx.netns_dir, name).map_err(|e| kernel(&e))?;
    // A fresh namespace has loopback down; every runtime brings it up (loopback plugin), and a
    // debugging namespace is useless without it.
    let ns = ctx.open_ns(name)?;
    let up = kernel::Netlink::open_in(&ns).and_then(|mut nl| {
        use kernel::NetlinkOps;
        match nl.link_by_name("lo")? {
            Some(lo) => nl.link_set_up(lo.index),
            None => Ok(()),
        }
    });
    if let Err(e) = up {
        let _ = kernel::netns::delete_pinned(&ctx.netns_dir, name);
        return Err(Error::Failed(format!(
            "namespace {name:?}: bringing up lo failed: {e}"
        )));
    }
    Ok(())
}

/// `netns del NAME`: warns about attachments left in the cache (they need `detach` or `gc`).
pub fn del(ctx: &Ctx, name: &str, err: &mut dyn Write) -> Result<()> {
    let ns = ctx.open_ns(name)?;
    let left = ctx.attachments_of(name, Some(&ns));
    drop(ns);
    kernel::netns::delete_pinned(&ctx.netns_dir, name).map_err(|e| kernel(&e))?;
    for e in left {
        let _ = writeln!(
            err,
            "warning: {name} was still attached to network {:?} (id {}, {}); run `netns gc {}` to release its resources",
            e.network_name, e.container_id, e.if_name, e.network_name
        );
    }
    Ok(())
}

/// One row of `netns list --json`.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct NsInfo {
    /// Namespace name.
    pub name: String,
    /// Pin path.
    pub path: String,
    /// Cached attachments as `network/ifname`.
    pub attachments: Vec<String>,
}

/// Collect `netns list`.
pub fn list(ctx: &Ctx) -> Result<Vec<NsInfo>> {
    let names = kernel::netns::list_pinned(&ctx.netns_dir).map_err(|e| kernel(&e))?;
    Ok(names
        .into_iter()
        .map(|name| {
            let ns = kernel::NetNs::open(&ctx.ns_path(&name)).ok();
            let attachments = ctx
                .attachments_of(&name, ns.as_ref())
                .into_iter()
                .map(|e| format!("{}/{}", e.network_name, e.if_name))
                .collect();
            NsInfo {
                path: ctx.ns_path(&name).display().to_string(),
                name,
                attachments,
            }
        })
        .collect())
}

/// Human form of `netns list`.
pub fn render_list(rows: &[NsInfo]) -> String {
    let mut t = Table::new(&["NAME", "PATH", "ATTACHMENTS"]);
    for r in rows {
        t.row(vec![
            r.name.clone(),
            r.path.clone(),
            crate::table::dash(r.attachments.join(",")),
        ]);
    }
    t.render()
}

/// `netns exec NAME -- CMD...`: enter the namespace on this (only) thread, give the command its
/// own mount namespace with a sysfs of the target namespace (what `ip netns exec` does, so
/// /sys/class/net is right), then exec. Returns only on failure, with the exit status to use.
pub fn exec(ctx: &Ctx, name: &str, command: &[String], err: &mut dyn Write) -> i32 {
    let ns = match ctx.open_ns(name) {
        Ok(ns) => ns,
        Err(e) => {
            let _ = writeln!(err, "netns: {e}");
            return e.exit_code();
        }
    };
    // The process is single-threaded here (no thread was spawned), so moving this thread moves
    // the whole program, and the exec'd command inherits the namespace.
    if let Err(e) = setns(ns.fd(), CloneFlags::CLONE_NEWNET) {
        let _ = writeln!(err, "netns: entering namespace {name:?} failed: {e}");
        return crate::cli::exit::FAILED;
    }
    if let Err(e) = remount_sys() {
        let _ = writeln!(
            err,
            "netns: warning: /sys still shows the previous namespace: {e}"
        );
    } else {
        bind_etc(name, err);
    }
    let Some((prog, args)) = command.split_first() else {
        return crate::cli::exit::USAGE;
    };
    let e = std::process::Command::new(prog).args(args).exec();
    let _ = writeln!(err, "netns: cannot execute {prog:?}: {e}");
    if e.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    }
}

/// The per-namespace /etc directory: `$NETNS_ETC_DIR/NAME`, else `/etc/netns/NAME` (iproute2's
/// fixed place; the variable lets tests keep their files out of the machine's /etc).
fn etc_dir(name: &str) -> std::path::PathBuf {
    let base = std::env::var_os("NETNS_ETC_DIR").unwrap_or_else(|| "/etc/netns".into());
    Path::new(&base).join(name)
}

/// What `ip netns exec` does after entering: bind-mount every file of the namespace's /etc
/// directory (sandboxd writes hosts, resolv.conf and hostname there) over the same name in
/// /etc, inside the command's own mount namespace. A file that cannot be mounted is a warning.
fn bind_etc(name: &str, err: &mut dyn Write) {
    let dir = etc_dir(name);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    let none: Option<&str> = None;
    for e in entries.flatten() {
        let target = Path::new("/etc").join(e.file_name());
        if let Err(x) = mount(Some(&e.path()), &target, none, MsFlags::MS_BIND, none) {
            let _ = writeln!(
                err,
                "netns: warning: bind {} over {} failed: {x}",
                e.path().display(),
                target.display()
            );
        }
    }
}

fn remount_sys() -> std::result::Result<(), nix::errno::Errno> {
    let none: Option<&str> = None;
    unshare(CloneFlags::CLONE_NEWNS)?;
    // Keep our new mounts from propagating back to the caller's mount namespace.
    mount(
        none,
        Path::new("/"),
        none,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        none,
    )?;
    umount2(Path::new("/sys"), MntFlags::MNT_DETACH)?;
    mount(
        Some("sysfs"),
        Path::new("/sys"),
        Some("sysfs"),
        MsFlags::empty(),
        none,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid_new_name(name: &str) -> bool {
        check_ns_name(name).is_ok() && cni::validate_name("namespace name", name).is_ok()
    }

    #[test]
    fn list_rendering() {
        let rows = vec![
            NsInfo {
                name: "c1".into(),
                path: "/run/netns/c1".into(),
                attachments: vec!["demo/eth0".into(), "other/eth1".into()],
            },
            NsInfo {
                name: "empty".into(),
                path: "/run/netns/empty".into(),
                attachments: vec![],
            },
        ];
        assert_eq!(
            render_list(&rows),
            "NAME   PATH              ATTACHMENTS\n\
             c1     /run/netns/c1     demo/eth0,other/eth1\n\
             empty  /run/netns/empty  -\n"
        );
        let j = serde_json::to_value(&rows[0]).unwrap();
        assert_eq!(j["attachments"][1], "other/eth1");
    }

    #[test]
    fn new_names() {
        assert!(valid_new_name("web-1.a_b"));
        for bad in ["", "-x", "a b", "a/b", "..", "x;y"] {
            assert!(!valid_new_name(bad), "{bad}");
        }
    }
}
