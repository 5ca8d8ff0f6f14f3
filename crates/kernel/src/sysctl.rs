//! Reads and writes under /proc/sys. Network sysctls are per network namespace: the kernel
//! resolves /proc/sys/net through the namespace of the thread that opens the file, so for a
//! container call these inside [`crate::netns::NetNs::run`].
//!
//! Keys are either slash form (`net/ipv4/ip_forward`) or dotted form (`net.ipv4.ip_forward`);
//! dots become slashes only when the key has no `/`, because interface names may contain dots
//! (`net/ipv6/conf/eth0.100/accept_ra`).

use std::io::Write;
use std::path::PathBuf;

use crate::error::{Error, Result};

const ROOT: &str = "/proc/sys";

/// Map a key to its path under /proc/sys, refusing anything that could leave that tree.
pub fn key_path(key: &str) -> Result<PathBuf> {
    let invalid = |reason: &str| Error::Invalid {
        what: "sysctl key",
        reason: format!("{key:?}: {reason}"),
    };
    if key.is_empty() {
        return Err(invalid("empty"));
    }
    if key.starts_with('/') {
        return Err(invalid("must be relative to /proc/sys"));
    }
    if key.contains('\0') {
        return Err(invalid("contains NUL"));
    }
    let rel = if key.contains('/') {
        key.to_string()
    } else {
        key.replace('.', "/")
    };
    for comp in rel.split('/') {
        if comp.is_empty() || comp == "." || comp == ".." {
            return Err(invalid("empty, '.' or '..' path component"));
        }
    }
    Ok(PathBuf::from(ROOT).join(rel))
}

/// Read a sysctl, without the trailing newline.
pub fn read(key: &str) -> Result<String> {
    let path = key_path(key)?;
    let s = std::fs::read_to_string(&path)
        .map_err(|e| Error::io(format!("failed to read sysctl {}", path.display()), e))?;
    Ok(s.trim_end_matches('\n').to_string())
}

/// Write a sysctl (one write(2), as the kernel expects).
pub fn write(key: &str, value: &str) -> Result<()> {
    let path = key_path(key)?;
    let ctx = || format!("failed to write {value:?} to sysctl {}", path.display());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(ctx(), e))?;
    f.write_all(value.as_bytes())
        .map_err(|e| Error::io(ctx(), e))
}

/// Write only when the current value differs (cni-reference §2.2 step 11: forwarding is written
/// only if not already 1, which also works on read-only /proc/sys when nothing must change).
/// Returns whether a write happened.
pub fn write_if_different(key: &str, value: &str) -> Result<bool> {
    if read(key)?.trim() == value.trim() {
        return Ok(false);
    }
    write(key, value)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_and_slash_keys() {
        assert_eq!(
            key_path("net.ipv4.ip_forward").unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/ip_forward")
        );
        assert_eq!(
            key_path("net/ipv6/conf/eth0.100/accept_ra").unwrap(),
            PathBuf::from("/proc/sys/net/ipv6/conf/eth0.100/accept_ra")
        );
    }

    #[test]
    fn escaping_keys_rejected() {
        for bad in [
            "",
            "/etc/passwd",
            "net/../../etc/passwd",
            "net/./x",
            "net//x",
            "..",
            "net.ipv4.",
            "a\0b",
        ] {
            assert!(key_path(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn read_existing_key() {
        // Reading is harmless; every Linux has this key.
        let v = read("kernel/ostype").unwrap();
        assert_eq!(v, "Linux");
    }
}
