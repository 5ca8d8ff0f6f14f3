//! CNI error type and the well-known error codes (the spec's "Error" section).
//!
//! Every failure leaving a plugin is a [`CniError`]: printed as JSON on stdout with a numeric
//! `code`, a short `msg` and optional `details`, exit status non-zero.

use serde::Serialize;

/// Well-known CNI error codes. 0–99 are reserved by the spec; 999 is the Go library's "internal".
pub mod codes {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in network configuration (msg must name key and value).
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist (the runtime need not call DEL).
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid or missing environment variables (msg must name them).
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure, e.g. reading stdin.
    pub const IO_FAILURE: u32 = 5;
    /// Failed to decode content (bad JSON).
    pub const DECODE: u32 = 6;
    /// Invalid network config.
    pub const INVALID_CONFIG: u32 = 7;
    /// Invalid network namespace (Go library code).
    pub const INVALID_NETNS: u32 = 8;
    /// Try again later (transient).
    pub const TRY_AGAIN: u32 = 11;
    /// STATUS: the plugin is not available to serve ADD.
    pub const NOT_AVAILABLE: u32 = 50;
    /// STATUS: not available and existing containers may have degraded connectivity.
    pub const DEGRADED: u32 = 51;
    /// Untyped internal failure (Go's `ErrInternal`).
    pub const INTERNAL: u32 = 999;
}

/// A CNI error as defined by the spec: `{"cniVersion","code","msg","details"}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, thiserror::Error)]
#[error("{}", self.display_text())]
pub struct CniError {
    /// Numeric error code (see [`codes`]).
    pub code: u32,
    /// Short human-readable message.
    pub msg: String,
    /// Optional longer explanation; omitted from JSON when empty.
    pub details: String,
}

#[derive(Serialize)]
struct ErrorJson<'a> {
    #[serde(rename = "cniVersion")]
    cni_version: &'a str,
    code: u32,
    msg: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    details: &'a str,
}

impl CniError {
    /// A new error with `code` and `msg` and no details.
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    /// The same error with `details` set.
    pub fn with_details(mut self, d: impl Into<String>) -> Self {
        self.details = d.into();
        self
    }

    /// An untyped internal error (code 999), what Go's skel makes of non-typed handler errors.
    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(codes::INTERNAL, msg)
    }

    /// The same error, its message prefixed with `"{ctx}: "` (what was being done).
    pub fn context(mut self, ctx: impl std::fmt::Display) -> Self {
        self.msg = format!("{ctx}: {}", self.msg);
        self
    }

    /// The spec's error JSON, with `cniVersion` set to the config's version.
    pub fn to_json(&self, cni_version: &str) -> String {
        let j = ErrorJson {
            cni_version,
            code: self.code,
            msg: &self.msg,
            details: &self.details,
        };
        // Serializing a struct of strings and an integer cannot fail; fall back to a fixed text anyway.
        serde_json::to_string(&j).unwrap_or_else(|_| {
            format!("{{\"cniVersion\":\"{cni_version}\",\"code\":999,\"msg\":\"error encoding failed\"}}")
        })
    }

    /// Decode a plugin's error JSON (`code`, `msg`, `details`); `None` when it is not one.
    pub fn from_json(bytes: &[u8]) -> Option<CniError> {
        let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
        let o = v.as_object()?;
        let code = o.get("code")?.as_u64()?;
        let msg = o.get("msg").and_then(|m| m.as_str()).unwrap_or_default();
        let details = o
            .get("details")
            .and_then(|m| m.as_str())
            .unwrap_or_default();
        Some(CniError {
            code: u32::try_from(code).unwrap_or(codes::INTERNAL),
            msg: msg.to_string(),
            details: details.to_string(),
        })
    }

    // Go's types.Error.Error(): "msg" or "msg; details".
    fn display_text(&self) -> String {
        if self.details.is_empty() {
            self.msg.clone()
        } else {
            format!("{}; {}", self.msg, self.details)
        }
    }
}

impl From<std::io::Error> for CniError {
    fn from(e: std::io::Error) -> Self {
        CniError::new(codes::IO_FAILURE, e.to_string())
    }
}

/// Adds what was being done to an error on its way to the CNI edge:
/// `nl.link_set_up(i).context("set host veth up")?`. The code is the one the source error's
/// `From` impl gives (kernel and firewall errors map in their crates, as ipam's do), so every
/// plugin reports the same failure with the same code.
pub trait Context<T> {
    /// The error as a [`CniError`], its message prefixed with `"{ctx}: "`.
    fn context(self, ctx: impl std::fmt::Display) -> Result<T, CniError>;
}

impl<T, E: Into<CniError>> Context<T> for Result<T, E> {
    fn context(self, ctx: impl std::fmt::Display) -> Result<T, CniError> {
        self.map_err(|e| e.into().context(ctx))
    }
}

/// Several independent steps failed (DEL and GC keep going after an error): `Ok` when none
/// did, the error itself when one did, otherwise one internal error listing every message.
pub fn combine(errors: Vec<CniError>) -> Result<(), CniError> {
    let mut iter = errors.into_iter();
    let Some(first) = iter.next() else {
        return Ok(());
    };
    let rest: Vec<CniError> = iter.collect();
    if rest.is_empty() {
        return Err(first);
    }
    let msgs: Vec<String> = std::iter::once(&first)
        .chain(&rest)
        .map(ToString::to_string)
        .collect();
    Err(CniError::internal(msgs.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape_without_details() {
        let e = CniError::new(
            codes::INVALID_ENV,
            "required env variables [CNI_PATH] missing",
        );
        let v: serde_json::Value = serde_json::from_str(&e.to_json("1.0.0")).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"cniVersion":"1.0.0","code":4,"msg":"required env variables [CNI_PATH] missing"})
        );
    }

    #[test]
    fn json_shape_with_details_and_display() {
        let e = CniError::internal("boom").with_details("because");
        let v: serde_json::Value = serde_json::from_str(&e.to_json("1.1.0")).unwrap();
        assert_eq!(v["code"], 999);
        assert_eq!(v["details"], "because");
        assert_eq!(e.to_string(), "boom; because");
        assert_eq!(CniError::from_json(e.to_json("1.1.0").as_bytes()), Some(e));
        assert_eq!(CniError::from_json(b"not json"), None);
    }

    #[test]
    fn context_prefixes_the_message_and_keeps_the_code() {
        let r: Result<(), CniError> = Err(CniError::new(codes::INVALID_CONFIG, "bad"));
        let e = r.context("loading").unwrap_err();
        assert_eq!(
            (e.code, e.msg.as_str()),
            (codes::INVALID_CONFIG, "loading: bad")
        );
        let io: Result<(), std::io::Error> = Err(std::io::ErrorKind::NotFound.into());
        assert_eq!(io.context("reading").unwrap_err().code, codes::IO_FAILURE);
    }

    #[test]
    fn combine_keeps_every_message() {
        assert!(combine(vec![]).is_ok());
        let one = combine(vec![CniError::new(7, "bad")]).unwrap_err();
        assert_eq!((one.code, one.msg.as_str()), (7, "bad"));
        let two = combine(vec![CniError::new(7, "bad"), CniError::new(3, "gone")]).unwrap_err();
        assert_eq!(two.code, codes::INTERNAL);
        assert!(
            two.msg.contains("bad") && two.msg.contains("gone"),
            "{}",
            two.msg
        );
    }
}
