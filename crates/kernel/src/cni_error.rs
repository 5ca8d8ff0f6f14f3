//! The CNI edge of this crate's errors: the one place where a kernel failure gets its CNI error
//! code (mapped once at the crate edge, as ipam does), so every plugin reports the same
//! failure with the same code. Plugins add what they were doing with `cni::error::Context`.
//!
//! Codes (reference §1.8): a value rejected before any side effect is an invalid network
//! config (7); a file that is not a network namespace, or a CNI_NETNS that cannot be opened, is
//! an invalid netns (8, the Go libraries' code); everything else is internal (999), what the
//! reference plugins' untyped errors become.

use std::path::Path;

use cni::error::{codes, CniError};

use crate::error::Error;
use crate::netns::NetNs;

impl From<Error> for CniError {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::Invalid { .. } => codes::INVALID_CONFIG,
            Error::NotNetns { .. } => codes::INVALID_NETNS,
            _ => codes::INTERNAL,
        };
        CniError::new(code, e.to_string())
    }
}

/// The CNI error for CNI_NETNS `path` that [`NetNs::open`] refused: code 8, the message naming
/// the path (the I/O error already reads "failed to open netns …: failed to Statfs …", the
/// reference's wording).
pub fn netns_error(path: &Path, e: Error) -> CniError {
    let msg = match e {
        Error::Io { .. } => e.to_string(),
        other => format!("failed to open netns {}: {other}", path.display()),
    };
    CniError::new(codes::INVALID_NETNS, msg)
}

/// Open CNI_NETNS for a plugin that enters it: unset is code 4 naming the variable, a path that
/// cannot be opened or is no network namespace code 8.
pub fn open_netns(path: Option<&Path>) -> Result<NetNs, CniError> {
    let path = path.ok_or_else(|| {
        CniError::new(
            codes::INVALID_ENV,
            "required env variables [CNI_NETNS] missing",
        )
    })?;
    NetNs::open(path).map_err(|e| netns_error(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_by_kind() {
        let invalid = Error::Invalid {
            what: "interface name",
            reason: "too long".into(),
        };
        assert_eq!(CniError::from(invalid).code, codes::INVALID_CONFIG);
        let not_ns = Error::NotNetns {
            path: "/tmp".into(),
            magic: 0x01021994,
        };
        assert_eq!(CniError::from(not_ns).code, codes::INVALID_NETNS);
        let nl = Error::Netlink {
            op: "link_del",
            errno: libc::EPERM,
            target: "ifindex 3".into(),
            ext_ack: String::new(),
        };
        let e = CniError::from(nl);
        assert_eq!(e.code, codes::INTERNAL);
        assert!(
            e.msg.starts_with("netlink link_del ifindex 3: "),
            "{}",
            e.msg
        );
    }

    #[test]
    fn cni_netns_codes_and_messages() {
        let e = open_netns(None).unwrap_err();
        assert_eq!(e.code, codes::INVALID_ENV);
        assert!(e.msg.contains("CNI_NETNS"), "{}", e.msg);

        let e = open_netns(Some(Path::new("/proc/self/ns/absent"))).unwrap_err();
        assert_eq!(e.code, codes::INVALID_NETNS);
        assert!(
            e.msg
                .starts_with("failed to open netns /proc/self/ns/absent: failed to Statfs"),
            "{}",
            e.msg
        );

        let e = open_netns(Some(Path::new("/proc/self/status"))).unwrap_err();
        assert_eq!(e.code, codes::INVALID_NETNS);
        assert!(e.msg.contains("unknown FS magic"), "{}", e.msg);

        assert!(open_netns(Some(Path::new("/proc/self/ns/net"))).is_ok());
    }
}
