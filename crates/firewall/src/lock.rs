//! The firewall flock (parallel plugin calls are normal): every read-modify-write of either backend runs
//! under an exclusive flock on `/run/rcni/firewall.lock`. The kernel drops the lock when the
//! process dies, so `kill -9` at any point never wedges later calls.

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use crate::Error;

/// Held lock; released on drop (closing the fd releases the flock).
pub(crate) struct FwLock {
    _file: File,
}

pub(crate) fn lock(path: &Path) -> Result<FwLock, Error> {
    let err = |source| Error::Lock {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(err)?;
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    loop {
        // SAFETY: the fd is owned by `file`, which outlives the call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc == 0 {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(err(e));
        }
    }
    Ok(FwLock { _file: file })
}
