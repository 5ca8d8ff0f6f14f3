//! The CNI edge of this crate's errors: the one place where a firewall failure gets its CNI
//! error code (mapped once at the crate edge, as ipam does), so `bridge`, `portmap` and
//! `firewall` report the same failure with the same code. Plugins add what they were doing with
//! `cni::error::Context`.
//!
//! Codes (reference §1.8): a value rejected before any side effect, or a backend name we do not
//! implement, is an invalid network config (7); everything else, including a host where no
//! backend works, is internal (999).

use cni::error::{codes, CniError};

use crate::Error;

impl From<Error> for CniError {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::Invalid { .. } | Error::UnknownBackend(_) => codes::INVALID_CONFIG,
            _ => codes::INTERNAL,
        };
        CniError::new(code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_by_kind() {
        let e = CniError::from(Error::UnknownBackend("ebtables".into()));
        assert_eq!(e.code, codes::INVALID_CONFIG);
        assert!(e.msg.contains("ebtables"), "{}", e.msg);
        let invalid = Error::Invalid {
            what: "chain name",
            value: "a b".into(),
            reason: "bad",
        };
        assert_eq!(CniError::from(invalid).code, codes::INVALID_CONFIG);
        let none = Error::NoBackend {
            nft: "x".into(),
            ipt: "y".into(),
        };
        assert_eq!(CniError::from(none).code, codes::INTERNAL);
    }
}
