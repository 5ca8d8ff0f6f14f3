//! CNI_ARGS parsing.
//!
//! Errors use code 4 (invalid environment variable): CNI_ARGS is an environment variable and the
//! spec reserves code 2 ("unsupported field") for keys of the network configuration.

use crate::error::{codes, CniError};
use crate::version::go_quoted_list;

/// Parsed `CNI_ARGS` (`K=V;K=V`), in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CniArgs {
    /// Key/value pairs as given.
    pub pairs: Vec<(String, String)>,
}

/// The key that allows unknown keys (Kubernetes runtimes send `IgnoreUnknown=1;K8S_POD_*`).
pub const IGNORE_UNKNOWN: &str = "IgnoreUnknown";

fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "1" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

impl CniArgs {
    /// Split on `;`, each pair on `=` into exactly two parts (a value containing `=` is
    /// `ARGS: invalid pair "…"`, like the reference). Empty segments (a trailing `;`) are skipped:
    /// Go rejects them, but nothing is lost by being lenient there.
    pub fn parse(s: &str) -> Result<CniArgs, CniError> {
        let mut pairs = Vec::new();
        for seg in s.split(';') {
            if seg.is_empty() {
                continue;
            }
            let parts: Vec<&str> = seg.split('=').collect();
            if parts.len() != 2 {
                return Err(CniError::new(
                    codes::INVALID_ENV,
                    format!("ARGS: invalid pair {seg:?}"),
                ));
            }
            pairs.push((parts[0].to_string(), parts[1].to_string()));
        }
        Ok(CniArgs { pairs })
    }

    /// The value of `key` (case-sensitive); the last one wins when repeated, as in Go.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `IgnoreUnknown` is `1`/`true` (case-insensitive).
    pub fn ignore_unknown(&self) -> bool {
        self.get(IGNORE_UNKNOWN)
            .and_then(parse_bool)
            .unwrap_or(false)
    }

    /// Reject keys not in `known` (case-sensitive) unless `IgnoreUnknown` is set; an
    /// `IgnoreUnknown` value that is not a boolean is an error too (Go fails to unmarshal it).
    pub fn check_known(&self, known: &[&str]) -> Result<(), CniError> {
        if let Some(v) = self.get(IGNORE_UNKNOWN) {
            if parse_bool(v).is_none() {
                return Err(CniError::new(
                    codes::INVALID_ENV,
                    format!("ARGS: invalid value {v:?} for {IGNORE_UNKNOWN}"),
                ));
            }
        }
        if self.ignore_unknown() {
            return Ok(());
        }
        let unknown: Vec<String> = self
            .pairs
            .iter()
            .filter(|(k, _)| k != IGNORE_UNKNOWN && !known.contains(&k.as_str()))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(CniError::new(
                codes::INVALID_ENV,
                format!("ARGS: unknown args {}", go_quoted_list(&unknown)),
            ))
        }
    }

    /// Render back as `K=V;K=V` (what a runtime puts in CNI_ARGS).
    pub fn to_env(&self) -> String {
        self.pairs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(";")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_pairs() {
        assert!(CniArgs::parse("").unwrap().pairs.is_empty());
        let a = CniArgs::parse("IP=10.0.0.2;MAC=aa:bb;IP=10.0.0.3;").unwrap();
        assert_eq!(a.pairs.len(), 3);
        assert_eq!(a.get("IP"), Some("10.0.0.3"));
        assert_eq!(a.get("ip"), None);
        assert_eq!(a.get("MAC"), Some("aa:bb"));
        let e = CniArgs::parse("badpair").unwrap_err();
        assert_eq!(e.msg, "ARGS: invalid pair \"badpair\"");
        assert_eq!(
            CniArgs::parse("A=b=c").unwrap_err().msg,
            "ARGS: invalid pair \"A=b=c\""
        );
        let empty = CniArgs::parse("A=").unwrap();
        assert_eq!(empty.get("A"), Some(""));
        assert_eq!(a.to_env(), "IP=10.0.0.2;MAC=aa:bb;IP=10.0.0.3");
    }

    #[test]
    fn unknown_keys() {
        let a = CniArgs::parse("K8S_POD_NAME=x;IP=10.0.0.2").unwrap();
        assert!(a.check_known(&["IP", "K8S_POD_NAME"]).is_ok());
        let e = a.check_known(&[]).unwrap_err();
        assert_eq!(e.code, 4);
        assert_eq!(
            e.msg,
            "ARGS: unknown args [\"K8S_POD_NAME=x\" \"IP=10.0.0.2\"]"
        );
        assert_eq!(
            a.check_known(&["IP"]).unwrap_err().msg,
            "ARGS: unknown args [\"K8S_POD_NAME=x\"]"
        );
        for on in ["1", "true", "TRUE", "True"] {
            let a = CniArgs::parse(&format!("IgnoreUnknown={on};K8S_POD_NAME=x")).unwrap();
            assert!(a.ignore_unknown());
            assert!(a.check_known(&[]).is_ok());
        }
        for off in ["0", "false", "FALSE"] {
            let a = CniArgs::parse(&format!("IgnoreUnknown={off};K8S_POD_NAME=x")).unwrap();
            assert!(!a.ignore_unknown());
            assert!(a.check_known(&[]).is_err());
            // IgnoreUnknown itself is always known.
            let only = CniArgs::parse(&format!("IgnoreUnknown={off}")).unwrap();
            assert!(only.check_known(&[]).is_ok());
        }
        let bad = CniArgs::parse("IgnoreUnknown=maybe").unwrap();
        assert!(bad.check_known(&[]).is_err());
    }
}
