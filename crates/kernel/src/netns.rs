//! Network namespaces: open a namespace file (checking it really is one), compare two, run a
//! closure inside one, and create/delete/list pinned namespaces like `ip netns`.
//!
//! Namespaces are per thread. Nothing here ever moves the *calling* thread: work that must
//! happen inside a namespace runs on a short-lived scoped thread that `setns()`es and then exits,
//! so no thread can be left in the wrong namespace by an error or a panic (netavark instead
//! setns()es back and forth on its main thread).

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use crate::error::{Error, Result};

/// Magic number of nsfs, the file system behind /proc/*/ns/* and their bind mounts.
pub const NSFS_MAGIC: i64 = 0x6e73_6673;

/// An open network namespace file.
#[derive(Debug)]
pub struct NetNs {
    file: File,
    path: PathBuf,
}

impl NetNs {
    /// Open a network namespace file (e.g. `CNI_NETNS`). A missing file is an error naming the
    /// path ([`Error::is_not_found`] is true); a file that is not on nsfs is [`Error::NotNetns`].
    pub fn open(path: &Path) -> Result<NetNs> {
        let file = File::open(path).map_err(|e| {
            Error::io(
                format!(
                    "failed to open netns {}: failed to Statfs {}",
                    path.display(),
                    path.display()
                ),
                e,
            )
        })?;
        let st = nix::sys::statfs::fstatfs(&file)
            .map_err(|e| Error::nix(format!("failed to Statfs {}", path.display()), e))?;
        let magic = st.filesystem_type().0 as i64;
        if magic != NSFS_MAGIC {
            return Err(Error::NotNetns {
                path: path.to_path_buf(),
                magic,
            });
        }
        Ok(NetNs {
            file,
            path: path.to_path_buf(),
        })
    }

    /// The network namespace of the calling thread.
    pub fn current() -> Result<NetNs> {
        NetNs::open(Path::new("/proc/thread-self/ns/net"))
    }

    /// The path this namespace was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The namespace file descriptor (valid as long as `self`).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Whether both handles refer to the same namespace (same nsfs device and inode).
    pub fn same_as(&self, other: &NetNs) -> Result<bool> {
        let a = self.identity()?;
        let b = other.identity()?;
        Ok(a == b)
    }

    /// (st_dev, st_ino) of the namespace: its identity for comparisons.
    pub fn identity(&self) -> Result<(u64, u64)> {
        let m = self
            .file
            .metadata()
            .map_err(|e| Error::io(format!("failed to stat netns {}", self.path.display()), e))?;
        Ok((m.dev(), m.ino()))
    }

    /// Run `f` on a new thread that has entered this namespace; that thread exits when `f`
    /// returns, so the caller's thread never changes namespace. Child processes spawned by `f`
    /// inherit the namespace; sockets created by `f` stay bound to it.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        std::thread::scope(|s| {
            let handle = s.spawn(|| -> Result<T> {
                setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| {
                    Error::nix(format!("failed to enter netns {}", self.path.display()), e)
                })?;
                Ok(f())
            });
            handle.join().map_err(|_| Error::ThreadPanicked {
                path: self.path.clone(),
            })?
        })
    }
}

fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(Error::Invalid {
            what: "netns name",
            reason: format!("{name:?}"),
        });
    }
    Ok(())
}

/// Make `dir` a shared mount point so pins made in it propagate to other mount namespaces
/// (what `ip netns add` does for /run/netns): try `--make-rshared`; EINVAL means `dir` is not a
/// mount point yet, so bind it onto itself first and retry.
fn ensure_shared_mount(dir: &Path) -> Result<()> {
    let none: Option<&str> = None;
    let ctx = || format!("failed to make {} a shared mount", dir.display());
    match mount(
        none,
        dir,
        Some("none"),
        MsFlags::MS_SHARED | MsFlags::MS_REC,
        none,
    ) {
        Ok(()) => return Ok(()),
        Err(Errno::EINVAL) => {}
        Err(e) => return Err(Error::nix(ctx(), e)),
    }
    mount(
        Some(dir),
        dir,
        Some("none"),
        MsFlags::MS_BIND | MsFlags::MS_REC,
        none,
    )
    .map_err(|e| Error::nix(ctx(), e))?;
    mount(
        none,
        dir,
        Some("none"),
        MsFlags::MS_SHARED | MsFlags::MS_REC,
        none,
    )
    .map_err(|e| Error::nix(ctx(), e))
}

/// Create a new network namespace pinned by a bind mount at `<dir>/<name>` (like
/// `ip netns add`). The namespace is created on a short-lived thread, so the caller's thread
/// stays where it is. Fails with EEXIST if the pin already exists.
pub fn create_pinned(dir: &Path, name: &str) -> Result<PathBuf> {
    validate_name(name)?;
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("failed to create {}", dir.display()), e))?;
    ensure_shared_mount(dir)?;
    let path = dir.join(name);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| Error::io(format!("failed to create netns pin {}", path.display()), e))?;
    let target = path.clone();
    let res = std::thread::spawn(move || -> Result<()> {
        unshare(CloneFlags::CLONE_NEWNET)
            .map_err(|e| Error::nix("failed to unshare network namespace", e))?;
        let none: Option<&str> = None;
        mount(
            Some("/proc/thread-self/ns/net"),
            &target,
            Some("none"),
            MsFlags::MS_BIND,
            none,
        )
        .map_err(|e| {
            Error::nix(
                format!("failed to bind-mount netns on {}", target.display()),
                e,
            )
        })
    })
    .join()
    .unwrap_or_else(|_| Err(Error::ThreadPanicked { path: path.clone() }));
    if let Err(e) = res {
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    Ok(path)
}

/// Remove a pinned namespace: lazy unmount and unlink. A missing pin is not an error (DEL must be
/// idempotent).
pub fn delete_pinned(dir: &Path, name: &str) -> Result<()> {
    validate_name(name)?;
    let path = dir.join(name);
    match umount2(&path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
        Err(e) => {
            return Err(Error::nix(
                format!("failed to unmount {}", path.display()),
                e,
            ))
        }
    }
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("failed to remove {}", path.display()), e)),
    }
}

/// Names of the pins in `dir` (sorted); a missing directory means none.
pub fn list_pinned(dir: &Path) -> Result<Vec<String>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("failed to list {}", dir.display()), e)),
    };
    let mut names = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(format!("failed to list {}", dir.display()), e))?;
        if let Some(n) = entry.file_name().to_str() {
            names.push(n.to_string());
        }
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_missing_names_path() {
        let e = NetNs::open(Path::new("/nonexistent/netns/x")).unwrap_err();
        assert!(e.is_not_found());
        assert!(e.to_string().contains("/nonexistent/netns/x"), "{e}");
    }

    #[test]
    fn open_regular_file_is_not_netns() {
        let e = NetNs::open(Path::new("/proc/self/status")).unwrap_err();
        assert!(matches!(e, Error::NotNetns { .. }), "{e}");
        assert!(e.to_string().contains("unknown FS magic"));
    }

    #[test]
    fn current_is_same_as_itself() {
        // Opening our own namespace needs no privilege.
        let a = NetNs::current().unwrap();
        let b = NetNs::current().unwrap();
        assert!(a.same_as(&b).unwrap());
    }

    #[test]
    fn bad_pin_names() {
        for bad in ["", ".", "..", "a/b"] {
            assert!(validate_name(bad).is_err());
        }
    }
}
