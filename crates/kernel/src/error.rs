//! The crate's error type. Every variant carries enough context (operation, path, object) for
//! a plugin to turn it into a CNI error message without adding its own.

use std::path::PathBuf;

/// Errors of kernel access.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kernel answered a netlink request with `NLMSG_ERROR` (or a failed `NLMSG_DONE`).
    #[error("netlink {op}{}: {}{}",
        if target.is_empty() { String::new() } else { format!(" {target}") },
        std::io::Error::from_raw_os_error(*errno),
        if ext_ack.is_empty() { String::new() } else { format!(": {ext_ack}") })]
    Netlink {
        /// Operation name, the same as the [`crate::netlink::NetlinkOps`] method name.
        op: &'static str,
        /// Positive errno value (`EEXIST`, `ENODEV`, ...).
        errno: i32,
        /// What the operation was applied to (link name/index, address, route), may be empty.
        target: String,
        /// The kernel's extended ACK message, if it sent one.
        ext_ack: String,
    },
    /// A system call or file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the path or object.
        context: String,
        /// The underlying OS error.
        #[source]
        source: std::io::Error,
    },
    /// A path that was expected to be a network namespace is something else
    /// (the reference plugins report "unknown FS magic" for this case).
    #[error("{} is not a network namespace (unknown FS magic on {}: {magic:#x})", path.display(), path.display())]
    NotNetns {
        /// The offending path.
        path: PathBuf,
        /// The file system magic found by fstatfs(2).
        magic: i64,
    },
    /// A named object does not exist.
    #[error("{what} not found")]
    NotFound {
        /// Description of the missing object, e.g. `link "eth0"`.
        what: String,
    },
    /// A caller-supplied value was rejected before any side effect.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was invalid (e.g. "sysctl key", "MAC address").
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The kernel sent something this client cannot decode or did not expect.
    #[error("netlink {op}: protocol error: {detail}")]
    Protocol {
        /// Operation name.
        op: &'static str,
        /// Description.
        detail: String,
    },
    /// A helper thread (used to enter a namespace) panicked.
    #[error("thread running inside network namespace {} panicked", path.display())]
    ThreadPanicked {
        /// The namespace the thread had entered.
        path: PathBuf,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Build an [`Error::Io`] from a context and an OS error.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Build an [`Error::Io`] from a context and a nix errno.
    pub fn nix(context: impl Into<String>, errno: nix::errno::Errno) -> Self {
        Error::Io {
            context: context.into(),
            source: std::io::Error::from_raw_os_error(errno as i32),
        }
    }

    /// The errno behind this error, if there is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Netlink { errno, .. } => Some(*errno),
            Error::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    /// True when the object does not exist: `ENOENT`, `ENODEV`, `ESRCH` (route),
    /// `EADDRNOTAVAIL` (address) or [`Error::NotFound`].
    pub fn is_not_found(&self) -> bool {
        match self {
            Error::NotFound { .. } => true,
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => true,
            _ => matches!(
                self.errno(),
                Some(libc::ENOENT | libc::ENODEV | libc::ESRCH | libc::EADDRNOTAVAIL)
            ),
        }
    }

    /// True when the object already exists (`EEXIST`).
    pub fn is_exists(&self) -> bool {
        self.errno() == Some(libc::EEXIST)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netlink_error_message_and_predicates() {
        let e = Error::Netlink {
            op: "bridge_add",
            errno: libc::EEXIST,
            target: "cni0".into(),
            ext_ack: String::new(),
        };
        assert!(e.is_exists());
        assert!(!e.is_not_found());
        assert_eq!(e.errno(), Some(libc::EEXIST));
        let s = e.to_string();
        assert!(s.starts_with("netlink bridge_add cni0: "), "{s}");
        assert!(s.contains("os error 17"), "{s}");
    }

    #[test]
    fn io_not_found() {
        let e = Error::io(
            "failed to open netns /x",
            std::io::Error::from_raw_os_error(libc::ENOENT),
        );
        assert!(e.is_not_found());
        assert!(e.to_string().starts_with("failed to open netns /x: "));
    }

    #[test]
    fn not_netns_message() {
        let e = Error::NotNetns {
            path: "/tmp/f".into(),
            magic: 0x58465342,
        };
        assert!(e.to_string().contains("unknown FS magic"));
        assert!(e.to_string().contains("0x58465342"));
    }
}
